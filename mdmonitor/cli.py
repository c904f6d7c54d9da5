"""The `mdmonitor` command: demo, monitored MD, and fitting a last-layer LPR estimator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_STOPPED = 3


def _add_cutoff_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cutoff", type=float, default=4.0,
                        help="aggregation radius in A: each atom's local uncertainty is the mean "
                             "over all atoms within it, itself included (default 4.0)")


def _add_monitor_options(parser: argparse.ArgumentParser) -> None:
    _add_cutoff_option(parser)
    parser.add_argument("--threshold", type=float, default=None,
                        help="local uncertainty above which a frame counts as triggered")


def _add_estimator_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--committee", nargs="+", metavar="MODEL",
                        help="two or more MACE model files")
    source.add_argument("--llpr", metavar="FILE", help="LLPR file from `mdmonitor fit-llpr`")
    source.add_argument("--ltau", metavar="FILE", help="LTAU file from `mdmonitor fit-ltau`")
    source.add_argument("--gmm", metavar="FILE", help="GMM file from `mdmonitor fit-gmm`")
    parser.add_argument("--model", help="with --llpr, --ltau or --gmm: the MACE model, if not "
                                        "where it was fitted")


def _add_labeled_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labeled", type=Path,
                        help="frames labelled with reference forces (DFT, EMT, ...), any file "
                             "ASE reads, e.g. extxyz with a REF_forces or forces column")
    _add_estimator_options(parser)
    _add_cutoff_option(parser)
    _add_forces_key_option(parser)


def _add_forces_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--forces-key", metavar="KEY", default=None,
                        help="name of the reference forces in the file (default: REF_forces, "
                             "else the forces stored with each frame)")


def _add_reference_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--reference", required=required, metavar="MODULE:CLASS",
                        help="reference ASE calculator class, e.g. ase.calculators.emt:EMT"
                             + ("" if required else " (with --label)"))
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="keyword argument of the reference calculator (repeatable; values "
                             "are Python literals, e.g. -p xc='PBE' -p kpts=(2,2,2))")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdmonitor", description="Watch where a MACE model is guessing during MD: per-atom "
        "uncertainty (committee or last-layer LPR), aggregated over neighbours, logged live.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="monitored MD of a hot Cu slab with the bundled bulk-trained models",
        description="Runs Langevin MD of a 96-atom Cu(100) slab at 600 K with the bundled tiny "
                    "MACE models (trained on bulk Cu only, so the surfaces are outside their "
                    "domain), and prints where the uncertainty concentrates. Writes "
                    "monitor.csv, trajectory.extxyz and max_uncertainty.png.")
    demo.add_argument("--uq", choices=("committee", "llpr", "ltau", "gmm"), default="committee",
                      help="4-member committee (force spread, eV/A), or for model 0: last-layer "
                           "LPR, LTAU (expected force error, eV/A) or latent GMM (NLL, nats)")
    demo.add_argument("--steps", type=int, default=300, help="MD steps of 2 fs (default 300)")
    demo.add_argument("--temperature", type=float, default=600.0, help="K (default 600)")
    demo.add_argument("--out", type=Path, default=Path("demo-output"),
                      help="output directory (default ./demo-output)")
    _add_monitor_options(demo)

    md = commands.add_parser(
        "md", help="monitored Langevin MD of a structure file",
        description="Langevin NVT MD driven by the committee mean (or the single LLPR model), "
                    "logging per frame the maximum and mean local uncertainty. Exit status 3 "
                    "when --stop-threshold ended the run.")
    md.add_argument("structure", type=Path, help="any file ASE reads (extxyz, cif, POSCAR, ...)")
    _add_estimator_options(md)
    _add_monitor_options(md)
    md.add_argument("--stop-threshold", type=float, default=None,
                    help="stop the run when any local uncertainty exceeds this")
    md.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    md.add_argument("--steps", type=int, default=1000, help="number of MD steps (default 1000)")
    md.add_argument("--timestep", type=float, default=1.0, help="fs (default 1.0)")
    md.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    md.add_argument("--interval", type=int, default=1, help="monitor every N steps (default 1)")
    md.add_argument("--log", type=Path, default=Path("monitor.csv"),
                    help="CSV log, appended to (default monitor.csv)")
    md.add_argument("--trajectory", type=Path, default=Path("trajectory.extxyz"),
                    help="extxyz frames with atomic/local uncertainty arrays")
    md.add_argument("--frame-interval", type=int, default=10, help="write every N steps")
    md.add_argument("--seed", type=int, default=0, help="random seed for velocities and noise")
    extract = md.add_argument_group(
        "extraction", "cut boxes around atoms above --threshold into a queue for `mdmonitor label`")
    extract.add_argument("--extract", choices=("cube", "embed", "cluster"),
                         help="strategy: periodic cube with relaxed border (seed 002), periodic "
                              "embedding with displaced buffer, or non-periodic cluster (seed 000)")
    extract.add_argument("--queue", type=Path, default=Path("candidates"),
                         help="queue directory (default ./candidates)")
    extract.add_argument("--core-radius", type=float, default=4.0,
                         help="atoms within this radius (A) of the centre are kept exactly")
    extract.add_argument("--box-length", type=float, default=None,
                         help="cube edge / cluster diameter in A (cube default: 12)")
    extract.add_argument("--relax", choices=("inline", "worker", "label"), default="inline",
                         help="relax cube borders in the MD process, in a background process, or "
                              "leave it to `mdmonitor label` (default inline)")
    extract.add_argument("--max-boxes", type=int, default=None, help="at most this many boxes")

    fit = commands.add_parser(
        "fit-llpr", help="fit a last-layer LPR estimator for one MACE model",
        description="Accumulates the Gauss-Newton matrix of the model's readout weights over "
                    "the training structures (energies, and forces unless --no-forces; no "
                    "labels needed) and writes it to one .npz file.")
    fit.add_argument("model", type=Path, help="MACE model file")
    fit.add_argument("structures", type=Path, help="training structures, any ASE-readable file")
    fit.add_argument("-o", "--output", type=Path, default=Path("llpr.npz"),
                     help="output file (default llpr.npz)")
    fit.add_argument("--no-forces", action="store_true", help="energy terms only")
    fit.add_argument("--force-weight", type=float, default=1.0,
                     help="weight of the force terms relative to energy terms (default 1)")
    fit.add_argument("--regularizer", type=float, default=None,
                     help="zeta^2 added to the diagonal; default: smallest that keeps the "
                          "matrix well conditioned")
    fit.add_argument("--scale", type=float, default=1.0,
                     help="uncertainty = scale / sqrt(LPR) (default 1)")

    log = commands.add_parser(
        "log-errors", help="per-atom training force errors at every epoch, for LTAU",
        description="Evaluates every epoch's checkpoint of a MACE training run (mace_run_train "
                    "--save_all_checkpoints) on the labeled training structures and writes "
                    "|F_ref - F_epoch| of every atom (eV/A) to one .npz error log.")
    log.add_argument("model", type=Path, help="the trained MACE model file (its architecture)")
    log.add_argument("checkpoints", type=Path, help="directory of *_epoch-N.pt checkpoints")
    log.add_argument("structures", type=Path, help="the labeled training structures")
    log.add_argument("-o", "--output", type=Path, default=Path("errors.npz"),
                     help="output file (default errors.npz)")
    _add_forces_key_option(log)

    ltau = commands.add_parser(
        "fit-ltau", help="fit an LTAU estimator (training-error PDFs + latent neighbours)",
        description="Bins each training atom's logged force errors into a PDF and indexes the "
                    "model's latent descriptors of the training atoms with FAISS, per element "
                    "(Vita et al., LTAU-FF).")
    ltau.add_argument("model", type=Path, help="MACE model file")
    ltau.add_argument("structures", type=Path, help="training structures, as in the error log")
    ltau.add_argument("errors", type=Path, help="error log from `mdmonitor log-errors`")
    ltau.add_argument("-o", "--output", type=Path, default=Path("ltau.npz"),
                      help="output file (default ltau.npz)")
    ltau.add_argument("-k", "--neighbours", type=int, default=10,
                      help="nearest training atoms averaged (default 10)")
    ltau.add_argument("--bins", type=int, default=1000, help="PDF bins (default 1000)")
    ltau.add_argument("--error-max", type=float, default=None,
                      help="upper edge of the last bin, eV/A (default: largest logged error)")
    ltau.add_argument("--index", choices=("auto", "flat", "hnsw"), default="auto",
                      help="exact FAISS search, HNSW, or HNSW above 100000 atoms (default auto)")
    ltau.add_argument("--first-epoch", type=int, default=0,
                      help="leave out the errors of the epochs before this one, a barely "
                           "trained model in a short training (default 0: all epochs)")
    ltau.add_argument("--ood-quantile", type=float, default=0.999,
                      help="out of domain beyond this quantile of the training atoms' nearest-"
                           "neighbour distances (default 0.999)")

    gmm = commands.add_parser(
        "fit-gmm", help="fit a Gaussian mixture on a model's latent descriptors",
        description="Fits one full-covariance Gaussian mixture per element on the training "
                    "atoms' latent descriptors (Tan et al., Eq. 11); uncertainty is the "
                    "negative log-likelihood. No labels needed.")
    gmm.add_argument("model", type=Path, help="MACE model file")
    gmm.add_argument("structures", type=Path, help="training structures, any ASE-readable file")
    gmm.add_argument("-o", "--output", type=Path, default=Path("gmm.npz"),
                     help="output file (default gmm.npz)")
    gmm.add_argument("--components", type=int, default=None,
                     help="Gaussians per element (default: lowest BIC up to --max-components)")
    gmm.add_argument("--max-components", type=int, default=8, help="(default 8)")
    gmm.add_argument("--seed", type=int, default=0, help="k-means initialisation seed")

    export = commands.add_parser(
        "export-lammps", help="write the estimator as one TorchScript file for LAMMPS",
        description="Compiles a committee of MACE models, or one model with its LLPR file, "
                    "into one TorchScript file (float64) for `pair_style mdmonitor FILE`: "
                    "energies, forces, virial and per-atom uncertainty in one call.")
    _add_estimator_options(export)
    export.add_argument("-o", "--output", type=Path, default=None,
                        help="output file (default committee.pt or llpr.pt)")

    calibrate = commands.add_parser(
        "calibrate", help="fit alpha: expected force error = alpha x local uncertainty",
        description="Predicts labelled frames with the estimator and fits alpha = mean local "
                    "force error / mean local uncertainty at --cutoff (Heid et al. 2024, Eq. 3), "
                    "the force error of an atom being the mean absolute error of its x, y, z "
                    "components (eV/A). With the JSON file the monitor takes thresholds as "
                    "expected force errors: MonitoredCalculator(..., calibration='alpha.json', "
                    "error_threshold=0.1). A few dozen frames like those of your simulation "
                    "suffice; alpha holds only for this estimator and this cutoff.")
    _add_labeled_options(calibrate)
    calibrate.add_argument("-o", "--output", type=Path, default=Path("alpha.json"),
                           help="output file (default alpha.json)")

    evaluate = commands.add_parser(
        "evaluate", help="report how well the uncertainty points at the real force errors",
        description="Predicts labelled frames with the estimator and compares force errors "
                    "with uncertainties per atom, aggregated within 1 to 6 A and per structure: "
                    "Spearman, Pearson, ROC-AUC, sparsification against the oracle, alpha "
                    "fitted on a fifth of the frames and checked on the rest, and the Gaussian "
                    "calibration of the force components. Writes report.md, report.json and "
                    "PNG figures; --cutoff is the radius the figures show.")
    _add_labeled_options(evaluate)
    evaluate.add_argument("--calibration-fraction", type=float, default=0.2,
                          help="fraction of the frames alpha is fitted on (default 0.2)")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="seed of the random choice of those frames (default 0)")
    evaluate.add_argument("--out", type=Path, default=Path("report"),
                          help="output directory (default ./report)")

    label = commands.add_parser(
        "label", help="relax and label the boxes of a candidate queue with a reference",
        description="Takes the pending boxes of QUEUE (written by an Extractor during MD), "
                    "relaxes the buffer of any not yet relaxed (with the model recorded in the "
                    "box, or --model), evaluates energy, forces and stress with the reference "
                    "calculator, appends them to QUEUE/labeled.extxyz (REF_energy, REF_forces, "
                    "REF_stress: ready for MACE training) and moves the box to QUEUE/done/; "
                    "boxes failing a quality gate go to QUEUE/failed/ with the reason. Safe to "
                    "interrupt and run again.")
    label.add_argument("queue", type=Path, help="queue directory (with pending/)")
    _add_reference_options(label, required=True)
    label.add_argument("--model", nargs="+", metavar="MODEL",
                       help="MACE model file(s) to relax buffers with, instead of those "
                            "recorded in the boxes")
    label.add_argument("--watch", action="store_true",
                       help="keep polling for new boxes (e.g. beside a running MD) until Ctrl-C")
    label.add_argument("--poll", type=float, default=2.0,
                       help="seconds between polls with --watch (default 2)")

    run = commands.add_parser(
        "lammps", help="run a LAMMPS input script with the plugin, labeling boxes meanwhile",
        description="Runs a LAMMPS input script through the lammps Python module (mpi4py: "
                    "start it under `mpirun -np N` for N ranks) with pair_style and fix "
                    "mdmonitor loaded. With --label QUEUE, rank 0 runs `mdmonitor label QUEUE "
                    "--watch` beside it, so boxes written by `fix mdmonitor ... extract` are "
                    "relaxed and labeled while the run goes on, and labels what is left at the "
                    "end.")
    run.add_argument("script", type=Path, help="LAMMPS input script")
    run.add_argument("-v", "--var", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"), help="index variable, as `lmp -var NAME VALUE`")
    run.add_argument("--label", type=Path, metavar="QUEUE",
                     help="queue directory the script's fix extracts boxes into")
    _add_reference_options(run, required=False)
    run.add_argument("--log", default="log.lammps", help="LAMMPS log file (default log.lammps)")
    return parser


def _estimator(args):
    from . import Committee
    from .estimator_files import load_fitted

    if args.committee:
        return Committee.from_mace(args.committee)
    kind = next(k for k in ("llpr", "ltau", "gmm") if getattr(args, k))
    return load_fitted(kind, getattr(args, kind), model=args.model)


def _demo(args) -> int:
    from .demo import run_demo

    summary = run_demo(args.out, uq=args.uq, steps=args.steps, temperature_K=args.temperature,
                       cutoff=args.cutoff, threshold=args.threshold)
    print(f"\n{summary['estimator']} monitor, {summary['atoms']}-atom Cu(100) slab, "
          f"{summary['steps']} steps at {summary['temperature_K']:.0f} K")
    print(f"mean local uncertainty: surface atoms {summary['surface_mean']:.4f}, "
          f"bulk-like atoms {summary['bulk_mean']:.4f} "
          f"(ratio {summary['surface_mean'] / summary['bulk_mean']:.2f})")
    print("most uncertain atoms in the last frame (index, neighbours, z in A, local uncertainty):")
    for index, neighbours, z, value in summary["top_atoms"]:
        print(f"  {index:4d}  {neighbours:2d}  {z:7.2f}  {value:.4f}")
    print(f"frames above threshold {summary['threshold']}: {summary['triggered_frames']}")
    if summary["boxes"]:
        print("boxes cut, border-relaxed and labeled with EMT (local uncertainty of the centre "
              "vs the model's mean |F - F_EMT| per component on the core atoms, eV/A):")
        for name, step, centre, uncertainty, error in summary["boxes"]:
            print(f"  step {step:4d}  atom {centre:3d}  uncertainty {uncertainty:.4f}  "
                  f"core force error {error:.4f}")
    for name, reason in summary["failed_boxes"].items():
        print(f"  failed: {name}: {reason}")
    if summary["blocking_s"]:
        blocking = sum(summary["blocking_s"]) / len(summary["blocking_s"])
        print(f"MD held up {blocking:.1f} s per extraction (inline relaxation)")
    print("wrote " + ", ".join(summary["files"]))
    return 0


def _md(args) -> int:
    import ase.io

    from . import MonitoredCalculator
    from .md import run_md
    from ase import units

    atoms = ase.io.read(args.structure)
    extractor = None
    if args.extract:
        from .extractor import Extractor

        box_length = args.box_length or (12.0 if args.extract == "cube" else None)
        extractor = Extractor(args.extract, queue=args.queue, core_radius=args.core_radius,
                              box_length=box_length, relax=args.relax, max_boxes=args.max_boxes,
                              seed=args.seed)
    calc = MonitoredCalculator(_estimator(args), cutoff=args.cutoff, threshold=args.threshold,
                               stop_threshold=args.stop_threshold, interval=args.interval,
                               log=args.log, timestep=args.timestep * units.fs,
                               extractor=extractor)
    try:
        stop = run_md(atoms, calc, steps=args.steps, temperature_K=args.temperature,
                      timestep_fs=args.timestep, friction=args.friction,
                      trajectory=args.trajectory, frame_interval=args.frame_interval,
                      seed=args.seed)
    finally:
        if extractor is not None:
            extractor.close()
    if extractor is not None:
        print(f"{extractor.boxes_written} boxes in {args.queue}; label them with "
              f"`mdmonitor label {args.queue} --reference MODULE:CLASS`")
    if stop is not None:
        print(f"stopped: {stop}", file=sys.stderr)
        return EXIT_STOPPED
    print(f"done: {args.steps} steps; log {args.log}, frames {args.trajectory}")
    return 0


def _fit_llpr(args) -> int:
    from . import LastLayerLPR

    estimator = LastLayerLPR.fit(args.model, args.structures, forces=not args.no_forces,
                                 regularizer=args.regularizer, force_weight=args.force_weight,
                                 scale=args.scale)
    estimator.save(args.output)
    print(f"wrote {args.output}: {estimator.features.dim} last-layer features, "
          f"{estimator.n_structures} structures, regularizer {estimator.regularizer:.3g}")
    return 0


def _log_errors(args) -> int:
    from .ltau import log_training_errors

    errors = log_training_errors(args.model, args.checkpoints, args.structures, args.output,
                                 forces_key=args.forces_key)
    print(f"wrote {args.output}: {errors.shape[0]} epochs x {errors.shape[1]} atoms, final "
          f"mean error {errors[-1].mean():.4g} eV/A")
    return 0


def _fit_ltau(args) -> int:
    from . import LTAU

    estimator = LTAU.fit(args.model, args.structures, args.errors, k=args.neighbours,
                         bins=args.bins, error_max=args.error_max, index=args.index,
                         ood_quantile=args.ood_quantile, first_epoch=args.first_epoch)
    estimator.save(args.output)
    cutoffs = ", ".join(f"{z}: {c:.3g}" for z, c in estimator.ood_cutoffs.items())
    print(f"wrote {args.output}: {estimator.n_epochs} epochs, {len(estimator.bin_edges) - 1} "
          f"bins up to {estimator.bin_edges[-1]:.3g} eV/A, k = {estimator.k}, out-of-domain "
          f"latent distance by atomic number {{{cutoffs}}}")
    return 0


def _fit_gmm(args) -> int:
    from . import LatentGMM

    estimator = LatentGMM.fit(args.model, args.structures, n_components=args.components,
                              max_components=args.max_components, seed=args.seed)
    estimator.save(args.output)
    print(f"wrote {args.output}: Gaussians by atomic number {estimator.n_components}")
    return 0


def _export_lammps(args) -> int:
    from .lammps_export import export

    output = args.output or Path("committee.pt" if args.committee else "llpr.pt")
    module = export(_estimator(args), output)
    print(f"wrote {module}: use it with `pair_style mdmonitor {module}`")
    return 0


def _calibrate(args) -> int:
    from .calibration import Calibration, uncertainty_unit

    estimator = _estimator(args)
    calibration = Calibration.fit(estimator, args.labeled, args.cutoff,
                                  forces_key=args.forces_key)
    calibration.save(args.output)
    print(f"alpha = {calibration.alpha:.4g} eV/A per {uncertainty_unit(estimator)} at cutoff "
          f"{calibration.cutoff:g} A, from {calibration.n_frames} frames ({calibration.n_atoms} "
          f"atoms, mean local force error {calibration.mean_error:.4f} eV/A)")
    print(f"wrote {args.output}: an expected local force error of 0.1 eV/A is a local "
          f"uncertainty of {calibration.threshold_for(0.1):.4g}")
    return 0


def _evaluate(args) -> int:
    from .evaluation import evaluate

    evaluation = evaluate(_estimator(args), args.labeled, cutoff=args.cutoff,
                          calibration_fraction=args.calibration_fraction, seed=args.seed,
                          forces_key=args.forces_key)
    files = evaluation.write(args.out)
    print(f"{'level':>10} {'Spearman':>9} {'ROC-AUC':>8} {'alpha':>8} {'test MAE':>9} "
          f"{'test MAD':>9}  (eV/A)")
    for cutoff in (0.0, args.cutoff, None):
        level = evaluation.level(cutoff)
        print(f"{level.label:>10} {level.spearman:9.3f} {level.roc_auc:8.3f} {level.alpha:8.4g} "
              f"{level.test_mae:9.4f} {level.test_mad:9.4f}")
    print("wrote " + ", ".join(str(path) for path in files))
    return 0


def _label(args) -> int:
    from .labeling import Labeler, parse_parameters, reference_calculator
    from .relaxation import calculator_from_files

    reference = reference_calculator(args.reference, parse_parameters(args.parameter))
    relax_with = calculator_from_files(args.model) if args.model else None
    if not args.queue.is_dir():
        raise FileNotFoundError(f"queue directory '{args.queue}' does not exist")
    labeler = Labeler(args.queue, reference, relax_with, reference_name=args.reference)
    try:
        labeler.run(watch=args.watch, poll=args.poll)
    except KeyboardInterrupt:
        print("interrupted; run again to resume", file=sys.stderr)
    summary = labeler.summary
    print(f"labeled {len(summary.labeled)} boxes into {labeler.queue.dataset}; "
          f"{len(summary.failed)} failed")
    for name, reason in summary.failed.items():
        print(f"  failed/{name}: {reason}")
    return 0


def _lammps(args) -> int:
    from .lammps_run import run_script

    return run_script(args.script, args.var, queue=args.label, reference=args.reference,
                      parameters=args.parameter, log=args.log)


def main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    handler = {"demo": _demo, "md": _md, "fit-llpr": _fit_llpr, "log-errors": _log_errors,
               "fit-ltau": _fit_ltau, "fit-gmm": _fit_gmm,
               "export-lammps": _export_lammps, "calibrate": _calibrate,
               "evaluate": _evaluate, "label": _label, "lammps": _lammps}[args.command]
    try:
        return handler(args)
    except (FileNotFoundError, ValueError, FloatingPointError, RuntimeError) as err:
        print(f"mdmonitor {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
