"""`mdmonitor demo` and `mdmonitor md`: monitored molecular dynamics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..common.freed_memory import keep_freed_memory
from ..common.settings import (
    non_negative_integer,
    non_negative_number,
    positive_integer,
    positive_number,
)
from ..extraction.host_embedding import HOST_STRUCTURES
from . import options

EXIT_STOPPED = 3  # exit status of `md` when --stop-threshold ended the run


def _checked(check, convert):
    """An argparse type: the text converted by `convert`, then refused by `check` (from
    common.settings) with argparse's usage error, before any model is loaded."""
    def parse(text: str):
        value = convert(text)  # a ValueError here is argparse's "invalid int value: ..."
        try:
            return check("value", value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = convert.__name__
    return parse


COUNT = _checked(non_negative_integer, int)
EVERY = _checked(positive_integer, int)
POSITIVE = _checked(positive_number, float)
NON_NEGATIVE = _checked(non_negative_number, float)


def add_commands(commands) -> None:
    """Add this group's commands to the `mdmonitor` subparsers `commands`."""
    demo = commands.add_parser(
        "demo", help="monitored MD of a hot Cu slab with the bundled bulk-trained models",
        description="Runs Langevin MD of a 96-atom Cu(100) slab at 600 K with the bundled tiny "
                    "MACE models (trained on bulk Cu only, so the surfaces are outside their "
                    "domain), and prints where the uncertainty concentrates. Writes "
                    "monitor.csv, trajectory.extxyz and max_uncertainty.png.")
    demo.add_argument("--uq", choices=("committee", "llpr", "ltau", "gmm"), default="committee",
                      help="4-member committee (force spread, eV/A), or for model 0: last-layer "
                           "LPR, LTAU (expected force error, eV/A) or latent GMM (NLL, nats)")
    demo.add_argument("--steps", type=COUNT, default=300, help="MD steps of 2 fs (default 300)")
    demo.add_argument("--temperature", type=NON_NEGATIVE, default=600.0,
                      help="K (default 600)")
    demo.add_argument("--out", type=Path, default=Path("demo-output"),
                      help="output directory (default ./demo-output)")
    options.add_monitor_options(demo)

    md = commands.add_parser(
        "md", help="monitored Langevin MD of a structure file",
        description="Langevin NVT MD driven by the committee mean (or its --drive model, or the "
                    "single model of --llpr, --ltau, --gmm), logging per frame the maximum and "
                    "mean local uncertainty. Refuses to overwrite the log or trajectory of an "
                    "earlier run unless --overwrite. Exit status 3 when --stop-threshold ended "
                    "the run, 130 on Ctrl-C.")
    md.add_argument("structure", type=Path, help="any file ASE reads (extxyz, cif, POSCAR, ...)")
    options.add_estimator_options(md)
    options.add_drive_option(md, "the members are then evaluated only on monitored steps "
                                 "(--interval)")
    options.add_monitor_options(md)
    md.add_argument("--stop-threshold", type=POSITIVE, default=None,
                    help="stop the run when any local uncertainty exceeds this")
    calibrated = md.add_argument_group(
        "calibrated thresholds", "limits given as expected local force errors (eV/A) through a "
        "calibration file of `mdmonitor calibrate`, of any map form")
    calibrated.add_argument("--calibration", type=Path, metavar="FILE",
                            help="calibration JSON fitted for this estimator and --cutoff; "
                                 "read again at the next monitored step whenever it changes "
                                 "(e.g. refitted by `mdmonitor label --watch --calibrate FILE` "
                                 "as the run's boxes are labeled; a new content that does not "
                                 "fit is refused with a warning), the log's calibration column "
                                 "naming the one each step used")
    calibrated.add_argument("--error-threshold", type=POSITIVE, default=None, metavar="EV_PER_A",
                            help="with --calibration, instead of --threshold: the expected local "
                                 "force error (eV/A) above which a frame counts as triggered; an "
                                 "alpha map turns it into the local uncertainty error / alpha, "
                                 "the other maps into a local uncertainty per element (the "
                                 "monitor compares each atom's expected error with it)")
    calibrated.add_argument("--error-stop-threshold", type=POSITIVE, default=None,
                            metavar="EV_PER_A",
                            help="with --calibration: stop the run when an expected local force "
                                 "error exceeds this (eV/A)")
    md.add_argument("--temperature", type=NON_NEGATIVE, default=300.0, help="K (default 300)")
    md.add_argument("--steps", type=COUNT, default=1000,
                    help="number of MD steps (default 1000)")
    md.add_argument("--timestep", type=POSITIVE, default=1.0, help="fs (default 1.0)")
    md.add_argument("--friction", type=NON_NEGATIVE, default=0.01,
                    help="Langevin friction, 1/fs")
    md.add_argument("--interval", type=EVERY, default=1, help="monitor every N steps (default 1)")
    md.add_argument("--log", type=Path, default=Path("monitor.csv"),
                    help="CSV log (default monitor.csv)")
    md.add_argument("--trajectory", type=Path, default=Path("trajectory.extxyz"),
                    help="extxyz frames with atomic/local uncertainty arrays")
    md.add_argument("--overwrite", action="store_true",
                    help="start over when the log or trajectory of an earlier run exists, "
                         "replacing both (without it, md refuses to start)")
    md.add_argument("--frame-interval", type=EVERY, default=10, help="write every N steps")
    md.add_argument("--seed", type=COUNT, default=0, help="random seed for velocities and noise")
    extract = md.add_argument_group(
        "extraction", "cut boxes around atoms above --threshold into a queue for `mdmonitor label`")
    extract.add_argument("--extract", choices=("cube", "embed", "cluster", "host"),
                         help="strategy: periodic cube with relaxed border (Heid et al. 2024), "
                              "periodic embedding with displaced buffer, non-periodic cluster, "
                              "or the environment in a host crystal (the last three Chong et "
                              "al. 2024)")
    extract.add_argument("--host", choices=HOST_STRUCTURES, default="fcc",
                         help="with --extract host: the host crystal of the environment's most "
                              "common element (default fcc)")
    extract.add_argument("--samples", type=EVERY, default=1,
                         help="boxes per centre, buffer displaced by 0.2 A noise (embed, host)")
    extract.add_argument("--queue", type=Path, default=Path("candidates"),
                         help="queue directory (default ./candidates)")
    extract.add_argument("--core-radius", type=POSITIVE, default=4.0,
                         help="atoms within this radius (A) of the centre are kept exactly")
    extract.add_argument("--box-length", type=POSITIVE, default=None,
                         help="cube edge / cluster diameter in A (cube default: 12)")
    extract.add_argument("--centres", nargs="+", metavar="ELEMENT",
                         help="only atoms of these elements are box centres, e.g. --centres O")
    extract.add_argument("--molecules", action="store_true",
                         help="with --extract cube: whole molecules (heavy atoms with their "
                              "hydrogens), their X-H bonds held while the border relaxes")
    extract.add_argument("--relax", choices=("inline", "worker", "label"), default="inline",
                         help="relax cube borders in the MD process, in a background process, or "
                              "leave it to `mdmonitor label` (default inline)")
    extract.add_argument("--max-boxes", type=EVERY, default=None,
                         help="at most this many boxes")

    demo.set_defaults(run=_demo)
    md.set_defaults(run=_md)


def _demo(args) -> int:
    from ..demo import run_demo

    keep_freed_memory()  # this process is ours: malloc keeps the force calls' tensors
    summary = run_demo(args.out, uq=args.uq, steps=args.steps, temperature_K=args.temperature,
                       cutoff=args.cutoff, threshold=args.threshold)
    unit = summary["unit"]
    ratio = summary["surface_mean"] / summary["bulk_mean"]
    print(f"\n{summary['estimator']} monitor, {summary['atoms']}-atom Cu(100) slab, "
          f"{summary['steps']} steps at {summary['temperature_K']:.0f} K")
    print(f"mean local uncertainty ({unit}): surface atoms {summary['surface_mean']:.4f}, "
          f"bulk-like atoms {summary['bulk_mean']:.4f} (ratio {ratio:.2f})")
    print("  -> " + ("the model is least sure at the surfaces, which its bulk-only training "
                     "never saw" if ratio > 1 else
                     "no more uncertain at the surfaces than in the bulk in this run"))
    print(f"most uncertain atoms in the last frame (index, neighbours, z in A, local "
          f"uncertainty in {unit}):")
    for index, neighbours, z, value in summary["top_atoms"]:
        print(f"  {index:4d}  {neighbours:2d}  {z:7.2f}  {value:.4f}")
    print(f"frames above threshold {summary['threshold']:g} {unit}: "
          f"{summary['triggered_frames']}")
    if summary["boxes"]:
        print(f"boxes cut, border-relaxed and labeled with EMT: local uncertainty of the centre "
              f"({unit}) vs the model's real force error on the core atoms (mean |F - F_EMT| "
              f"per component, eV/A):")
        for name, step, centre, uncertainty, error in summary["boxes"]:
            print(f"  step {step:4d}  atom {centre:3d}  uncertainty {uncertainty:.4f}  "
                  f"core force error {error:.4f}")
        errors = [row[4] for row in summary["boxes"]]
        print(f"  -> the model is off by {min(errors):.2f}-{max(errors):.2f} eV/A where the "
              f"monitor cut: these labeled boxes ({summary['files'][-1]}) are the training "
              "data it lacks")
    elif not summary["failed_boxes"]:
        print("  -> no box cut: no atom crossed the threshold; run longer (--steps) or lower "
              "--threshold")
    for name, reason in summary["failed_boxes"].items():
        print(f"  failed: {name}: {reason}")
    if summary["blocking_s"]:
        blocking = sum(summary["blocking_s"]) / len(summary["blocking_s"])
        print(f"MD held up {blocking:.2f} s per extraction (borders relaxed in a background "
              "process)")
    print("wrote " + ", ".join(summary["files"]))
    return 0


def _as_uncertainty(calibration, error: float, atoms) -> str:
    """The local uncertainty at which the expected error of `calibration` reaches `error`
    (eV/A) for the elements of `atoms`, in words."""
    if len(calibration.map.signals) > 1:
        return (f"the monitor compares each atom's expected error from "
                f"{', '.join(calibration.map.signals)} ({calibration.form} map) with it")
    elements = list(dict.fromkeys(atoms.get_chemical_symbols()))
    limits = calibration.uncertainty_limits(error, elements)
    return (f"local uncertainty {', '.join(f'{limits[s]:.4g} ({s})' for s in elements)} "
            f"({calibration.form} map)")


def _md(args) -> int:
    errors = [name for name, value in (("--error-threshold", args.error_threshold),
                                       ("--error-stop-threshold", args.error_stop_threshold))
              if value is not None]
    if errors and args.calibration is None:
        raise ValueError(f"{' and '.join(errors)} (an expected force error in eV/A) needs "
                         "--calibration FILE from `mdmonitor calibrate`")
    if args.molecules and args.extract != "cube":
        raise ValueError("--molecules needs --extract cube: whole molecules are cut into cubes "
                         "only")
    if args.centres and not args.extract:
        raise ValueError("--centres chooses where --extract cuts; give --extract too")
    if args.centres:
        from ..extraction.extractor import centre_numbers

        centre_numbers(args.centres, "--centres")
    earlier = [str(path) for path in (args.log, args.trajectory) if path.exists()]
    if earlier and not args.overwrite:
        raise FileExistsError(
            f"an earlier run's {' and '.join(earlier)} would be overwritten; pass --overwrite to "
            "start over (the log and trajectory are both replaced; boxes already in the queue "
            "are kept and not cut again) or give other --log and --trajectory files")
    from ase import units

    from ..common.structures import load_structures
    from ..md import run_md
    from ..monitor import MonitoredCalculator
    from ..quality.calibration import Calibration

    atoms = load_structures(args.structure)[-1]
    calibration = None if args.calibration is None else Calibration.load(args.calibration)
    if calibration is not None and calibration.form != "alpha":
        raw = [name for name, value in (("--threshold", args.threshold),
                                        ("--stop-threshold", args.stop_threshold))
               if value is not None]
        if raw:
            raise ValueError(f"with a calibration of form {calibration.form} the monitor "
                             f"compares expected errors: instead of {' and '.join(raw)} (local "
                             "uncertainties), give --error-threshold and --error-stop-threshold "
                             "(eV/A)")
    if args.overwrite:
        args.log.unlink(missing_ok=True)  # (run_md replaces the trajectory)
    extractor = None
    if args.extract:
        from ..extraction.extractor import Extractor

        box_length = args.box_length or (12.0 if args.extract == "cube" else None)
        extractor = Extractor(args.extract, queue=args.queue, core_radius=args.core_radius,
                              box_length=box_length, relax=args.relax, max_boxes=args.max_boxes,
                              seed=args.seed, n_samples=args.samples, molecules=args.molecules,
                              centre_elements=args.centres,
                              host=args.host if args.extract == "host" else None)
    estimator = options.estimator_from(args)
    if args.drive is not None:
        print(f"dynamics driven by {estimator.driven_by}; the committee is evaluated on "
              f"monitored steps only (every {args.interval})")
    calc = MonitoredCalculator(estimator, cutoff=args.cutoff,
                               threshold=args.threshold,
                               stop_threshold=args.stop_threshold, interval=args.interval,
                               log=args.log, timestep=args.timestep * units.fs,
                               extractor=extractor, calibration=args.calibration,
                               error_threshold=args.error_threshold,
                               error_stop_threshold=args.error_stop_threshold)
    for name, error in (("--error-threshold", args.error_threshold),
                        ("--error-stop-threshold", args.error_stop_threshold)):
        if error is not None:
            print(f"{name} {error:g} eV/A: {_as_uncertainty(calc.calibration, error, atoms)}")
    keep_freed_memory()  # this process is ours: malloc keeps the force calls' tensors
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
