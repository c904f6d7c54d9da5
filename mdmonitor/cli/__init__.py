"""The `mdmonitor` command. Each group of subcommands has its own module here, which defines
its options and runs them: monitoring (demo, md), estimators (fit-llpr, log-errors, fit-ltau,
fit-gmm), quality (calibrate, evaluate), labeling (label), selection (select), sampling
(adversarial), lammps (export-lammps, lammps), learning (learn).

Errors reach the user as one line and exit status 1, Ctrl-C as one line and status 130 (what
shells report for SIGINT), and SIGTERM (`kill PID`) as Ctrl-C; `mdmonitor --debug COMMAND` or
MDMONITOR_DEBUG=1 shows the traceback.

`mdmonitor --threads N COMMAND` (default 1) sets the threads of every command's computations:
torch's in this process and OMP_NUM_THREADS for it and the processes it starts (LAMMPS, training).
The command's process is ours; the Python API leaves the caller's thread count alone.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from importlib.metadata import PackageNotFoundError, version

from . import (
    estimators,
    labeling,
    lammps,
    learning,
    monitoring,
    quality,
    sampling,
    selection,
)

GROUPS = (monitoring, estimators, quality, labeling, selection, sampling, lammps, learning)
# One torch thread: the models are small; on a busy 2-core machine two threads made the demo 4x
# slower, and a 200-step committee `md` on torch's default threads took 17 min at load 8.5
# (29.5 s at load 1.7). LAMMPS gains from ranks, not threads (README, "Where users pay").
DEFAULT_THREADS = 1
DEBUG_VARIABLE = "MDMONITOR_DEBUG"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT
# what bad input, a missing or unwritable file or a full disk raise: the message is the news
USER_ERRORS = (OSError, ValueError, RuntimeError, FloatingPointError)


def installed_version() -> str:
    try:
        return version("mdmonitor")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The `mdmonitor` parser with every group's subcommands."""
    parser = argparse.ArgumentParser(
        prog="mdmonitor", description="Watch where a MACE model is guessing during MD: per-atom "
        "uncertainty (committee or last-layer LPR), aggregated over neighbours, logged live.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {installed_version()}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error or Ctrl-C (also: "
                             f"{DEBUG_VARIABLE}=1)")
    parser.add_argument("--threads", type=monitoring.EVERY, default=DEFAULT_THREADS, metavar="N",
                        help=f"threads of the computations of any command: torch's, and "
                             f"OMP_NUM_THREADS of this process and of the LAMMPS and training "
                             f"runs it starts (default {DEFAULT_THREADS}: the models are small, "
                             f"and on a busy machine more threads were many times slower; "
                             f"the Dask workers of `label` take --threads-per-worker)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(commands)
    return parser


def debugging(args) -> bool:
    """Whether --debug or the MDMONITOR_DEBUG variable asks for tracebacks."""
    return args.debug or os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


def describe(err: Exception) -> str:
    """One line for an exception: its message, the file an OS error names, the type of a bug."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: '{err.filename}'" if err.filename else err.strerror
    if isinstance(err, USER_ERRORS):
        return str(err) or type(err).__name__
    return (f"{type(err).__name__}: {err} (unexpected: please report it with the traceback of "
            f"`mdmonitor --debug ...`)")


def use_threads(threads: int) -> None:
    """Run this process's computations on `threads` threads: OMP_NUM_THREADS and
    MKL_NUM_THREADS (read by torch, libtorch and OpenMP when they load, the lower one winning,
    and inherited by the processes the command starts) and, if torch is loaded already,
    torch.set_num_threads. Only for the CLI's own process. It loads
    no torch: `label` may not need it (2 s), and in `lammps` torch loaded before LAMMPS would
    change which BLAS the plugin binds to (README, "LAMMPS against ASE")."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


class Terminated(KeyboardInterrupt):
    """SIGTERM: a command stops as on Ctrl-C (its trainers killed, its Dask cluster closed, a
    labeler's box filed first). `mdmonitor lammps` stops its labeler and threshold watcher by
    SIGTERM: a shell starts `command &` in a script with SIGINT ignored, and children inherit
    that."""


def _terminated(signum, frame):
    raise Terminated


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        use_threads(args.threads)
        return args.run(args)
    except KeyboardInterrupt:
        if debugging(args):
            raise
        print(f"\nmdmonitor {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if debugging(args):
            raise
        print(f"mdmonitor {args.command}: error: {describe(err)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)
