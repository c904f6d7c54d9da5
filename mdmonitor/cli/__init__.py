"""The `mdmonitor` command. Each group of subcommands has its own module here, which defines
its options and runs them: monitoring (demo, md), estimators (fit-llpr, log-errors, fit-ltau,
fit-gmm), quality (calibrate, evaluate), labeling (label), lammps (export-lammps, lammps),
learning (learn)."""

from __future__ import annotations

import argparse
import sys

from . import estimators, labeling, lammps, learning, monitoring, quality

GROUPS = (monitoring, estimators, quality, labeling, lammps, learning)


def build_parser() -> argparse.ArgumentParser:
    """The `mdmonitor` parser with every group's subcommands."""
    parser = argparse.ArgumentParser(
        prog="mdmonitor", description="Watch where a MACE model is guessing during MD: per-atom "
        "uncertainty (committee or last-layer LPR), aggregated over neighbours, logged live.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, FloatingPointError, RuntimeError) as err:
        print(f"mdmonitor {args.command}: error: {err}", file=sys.stderr)
        return 1

