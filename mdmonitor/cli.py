"""The `mdmonitor` command: demo, monitored MD, and fitting a last-layer LPR estimator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_STOPPED = 3


def _add_monitor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cutoff", type=float, default=4.0,
                        help="aggregation radius in A: each atom's local uncertainty is the mean "
                             "over all atoms within it, itself included (default 4.0)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="local uncertainty above which a frame counts as triggered")


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
    demo.add_argument("--uq", choices=("committee", "llpr"), default="committee",
                      help="4-member committee (force spread, eV/A) or last-layer LPR of model 0")
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
    source = md.add_mutually_exclusive_group(required=True)
    source.add_argument("--committee", nargs="+", metavar="MODEL",
                        help="two or more MACE model files")
    source.add_argument("--llpr", metavar="FILE", help="LLPR file from `mdmonitor fit-llpr`")
    md.add_argument("--model", help="with --llpr: the MACE model, if not where it was fitted")
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
    return parser


def _estimator(args):
    from . import Committee, LastLayerLPR

    if args.committee:
        return Committee.from_mace(args.committee)
    return LastLayerLPR.load(args.llpr, model=args.model)


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
    if args.threshold is not None:
        print(f"frames above threshold {args.threshold}: {summary['triggered_frames']}")
    print("wrote " + ", ".join(summary["files"]))
    return 0


def _md(args) -> int:
    import ase.io

    from . import MonitoredCalculator
    from .md import run_md
    from ase import units

    atoms = ase.io.read(args.structure)
    calc = MonitoredCalculator(_estimator(args), cutoff=args.cutoff, threshold=args.threshold,
                               stop_threshold=args.stop_threshold, interval=args.interval,
                               log=args.log, timestep=args.timestep * units.fs)
    stop = run_md(atoms, calc, steps=args.steps, temperature_K=args.temperature,
                  timestep_fs=args.timestep, friction=args.friction, trajectory=args.trajectory,
                  frame_interval=args.frame_interval, seed=args.seed)
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


def main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    handler = {"demo": _demo, "md": _md, "fit-llpr": _fit_llpr}[args.command]
    try:
        return handler(args)
    except (FileNotFoundError, ValueError, FloatingPointError) as err:
        print(f"mdmonitor {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
