"""`mdmonitor export-lammps`, `mdmonitor lammps` and `mdmonitor lammps-thresholds`: the
estimator in LAMMPS, and the thresholds of a calibration that follows the run."""

from __future__ import annotations

from pathlib import Path

from . import options
from .monitoring import POSITIVE

FOLLOW_POLL = 1.0  # s between reads of a followed calibration file
CALIBRATION_HELP = ("calibration JSON (`mdmonitor calibrate`) fitted for the exported estimator "
                    "and the fix's cutoff")


def add_commands(commands) -> None:
    """Add this group's commands to the `mdmonitor` subparsers `commands`."""
    export = commands.add_parser(
        "export-lammps", help="write the estimator as one TorchScript file for LAMMPS",
        description="Compiles a committee of MACE models, or one model with its LLPR file, "
                    "into one TorchScript file (float64) for `pair_style mdmonitor FILE`: "
                    "energies, forces, virial and per-atom uncertainty in one call.")
    options.add_estimator_options(export)
    options.add_drive_option(export, "the pair style evaluates the members only on the steps "
                                     "whose uncertainty a fix reads (fix mdmonitor's N)")
    export.add_argument("-o", "--output", type=Path, default=None,
                        help="output file (default committee.pt or llpr.pt)")

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
    options.add_reference_options(run, required=False)
    run.add_argument("--log", default="log.lammps", help="LAMMPS log file (default log.lammps)")
    follow = run.add_argument_group(
        "calibration that follows the run",
        "keep the file of `fix mdmonitor ... threshold_file PATH` the thresholds of a calibration "
        "(written before LAMMPS starts, then again whenever the calibration file changes, e.g. "
        "refitted by `mdmonitor label --watch --calibrate FILE`)")
    follow.add_argument("--calibration", type=Path, metavar="FILE", help=CALIBRATION_HELP)
    add_threshold_options(follow, required=False)
    follow.add_argument("--threshold-file", type=Path, default=Path("thresholds.txt"),
                        metavar="PATH", help="the fix's threshold_file (default thresholds.txt)")

    thresholds = commands.add_parser(
        "lammps-thresholds", help="write fix mdmonitor's threshold_file from a calibration",
        description="Writes the file `fix mdmonitor ... threshold_file PATH` reads: the local "
                    "uncertainty at which the calibration's expected local force error reaches "
                    "--error-threshold, one per atom type (of --elements). With --watch it writes "
                    "it again whenever the calibration file changes, until Ctrl-C; the fix takes "
                    "it up at its next monitored step. `mdmonitor lammps --calibration` runs "
                    "this beside LAMMPS.")
    thresholds.add_argument("calibration", type=Path, help=CALIBRATION_HELP)
    add_threshold_options(thresholds, required=True)
    thresholds.add_argument("-o", "--output", type=Path, default=Path("thresholds.txt"),
                            help="the threshold file (default thresholds.txt)")
    thresholds.add_argument("--watch", action="store_true",
                            help="keep it up to date with the calibration file until Ctrl-C")
    thresholds.add_argument("--poll", type=POSITIVE, default=FOLLOW_POLL,
                            help=f"seconds between reads with --watch (default {FOLLOW_POLL:g})")
    export.set_defaults(run=_export_lammps)
    run.set_defaults(run=_lammps)
    thresholds.set_defaults(run=_lammps_thresholds)


def add_threshold_options(parser, required: bool) -> None:
    """The error target (eV/A) and the atom types' elements of a threshold file."""
    parser.add_argument("--error-threshold", type=POSITIVE, required=required,
                        metavar="EV_PER_A", help="expected local force error (eV/A) at which an "
                                                 "atom counts as above the threshold")
    parser.add_argument("--elements", nargs="+", required=required, metavar="SYMBOL",
                        help="element of each atom type, type 1 first (as pair_coeff * * names "
                             "them)")


def _export_lammps(args) -> int:
    from ..lammps.export import export

    output = args.output or Path("committee.pt" if args.committee else "llpr.pt")
    module = export(options.estimator_from(args), output)
    print(f"wrote {module}: use it with `pair_style mdmonitor {module}`")
    return 0


def _lammps(args) -> int:
    from ..lammps.run import FollowedCalibration, run_script

    given = [name for name, value in (("--error-threshold", args.error_threshold),
                                      ("--elements", args.elements)) if value is not None]
    if args.calibration is None and given:
        raise ValueError(f"{' and '.join(given)} choose the thresholds of --calibration FILE: "
                         "give --calibration")
    if args.calibration is not None and len(given) < 2:
        raise ValueError("--calibration FILE needs --error-threshold (eV/A) and --elements (one "
                         "per atom type) for the fix's threshold_file")
    followed = None if args.calibration is None else FollowedCalibration(
        args.calibration, args.error_threshold, args.elements, args.threshold_file)
    return run_script(args.script, args.var, queue=args.label, reference=args.reference,
                      parameters=args.parameter, log=args.log, followed=followed)


def _lammps_thresholds(args) -> int:
    from ..lammps.thresholds import ThresholdFile, describe, follow

    thresholds = ThresholdFile(args.output, args.calibration, args.error_threshold,
                               args.elements)
    thresholds.update()
    print(describe(thresholds), flush=True)
    if args.watch:
        follow(thresholds, args.poll)
    return 0
