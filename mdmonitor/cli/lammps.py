"""`mdmonitor export-lammps` and `mdmonitor lammps`: the estimator in LAMMPS."""

from __future__ import annotations

from pathlib import Path

from . import options


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
    export.set_defaults(run=_export_lammps)
    # --threads reaches the plugin's libtorch through OMP_NUM_THREADS: importing torch here,
    # before LAMMPS, would change which BLAS it binds to (README, "LAMMPS against ASE")
    run.set_defaults(run=_lammps, torch_here=False)


def _export_lammps(args) -> int:
    from ..lammps.export import export

    output = args.output or Path("committee.pt" if args.committee else "llpr.pt")
    module = export(options.estimator_from(args), output)
    print(f"wrote {module}: use it with `pair_style mdmonitor {module}`")
    return 0


def _lammps(args) -> int:
    from ..lammps.run import run_script

    return run_script(args.script, args.var, queue=args.label, reference=args.reference,
                      parameters=args.parameter, log=args.log)
