"""`mdmonitor learn`: the closed active-learning loop."""

from __future__ import annotations

from pathlib import Path


def add_commands(commands) -> None:
    """Add this group's commands to the `mdmonitor` subparsers `commands`."""
    learn = commands.add_parser(
        "learn", help="active learning: monitored MD, boxes, labels, retraining, repeated",
        description=DESCRIPTION.format(strategies="uncertainty, random, ..."))
    _strategies_in_help(learn)
    learn.add_argument("config", type=Path, help="TOML file, e.g. examples/learn/cu_slab.toml")
    learn.add_argument("--generations", type=int, default=None,
                       help="run at most this many generations (overrides the config)")
    learn.set_defaults(run=_learn)


DESCRIPTION = ("Runs generations of: monitored MD with the current models (ASE or LAMMPS), "
               "selection of boxes ([selection] strategy: {strategies}), labeling with the "
               "reference, retraining with mace_run_train, refit of the estimator and "
               "calibration. Stops when an MD triggers nothing or after the generations. "
               "Writes the run directory named in the config; run the same command again to "
               "resume a killed run. Every key of CONFIG is listed in the README.")


def _strategies_in_help(learn) -> None:
    """Name the strategies of learn.config.SELECTIONS in `learn --help`, read when the help is
    shown: the config module loads torch, which every other command's parser would wait for."""
    plain = learn.format_help

    def format_help() -> str:
        from ..learn.config import SELECTIONS

        learn.description = DESCRIPTION.format(
            strategies=", ".join(SELECTIONS[:-1]) + " or " + SELECTIONS[-1])
        return plain()

    learn.format_help = format_help


def _learn(args) -> int:
    from ..common.freed_memory import keep_freed_memory
    from ..learn import ActiveLearning, load_config

    config = load_config(args.config, generations=args.generations)
    keep_freed_memory()  # this process is ours: malloc keeps the MD's and the fits' tensors
    rows = ActiveLearning(config).run()
    for row in rows:
        mae = row.get("test_force_mae")
        print(f"generation {row['generation']}: "
              + ("" if row["generation"] == "start" else
                 f"{row.get('md_steps')} MD steps, {row.get('boxes')} boxes, ")
              + f"{row['atoms_labeled_total']} reference atoms in total"
              + ("" if mae is None else f", test force MAE {mae:.4f} eV/A"))
    return 0
