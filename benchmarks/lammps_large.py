"""LAMMPS at 10^3, 10^4 and 10^5 atoms: time per atom-step, peak memory per rank and what two
MPI ranks gain, with the LLPR monitored every 10 steps (issue 26, item 3).

Goals (issue 26), checked in the last table:
- time per atom-step at 10^5 atoms within 15 % of 10^4's (LLPR monitored every 10 steps);
- peak memory linear in atoms: its growth per atom from 10^4 to 10^5 atoms within 15 % of
  that from 10^3 to 10^4 (peak RSS summed over the ranks);
- two ranks >= 1.8x one at 10^5 atoms.

Hot fcc Cu bulk, cells^3 cubic cells (4 cells^3 atoms: 6, 14 and 29 cells give 864, 10 976 and
97 556 atoms), velocities drawn at 1200 K, NVE: `examples/lammps/in.bulk_speed.lmp` (a 1-step
warm-up run, then 10 timed steps, one of them monitored) with `.venv/bin/lmp`, under
`.venv/bin/mpirun -np 2` for two ranks, OMP_NUM_THREADS=1. Per size and rank count, the plain
pair style (the LLPR's pair style alone: the model alone, no fix reads the LPR) is the baseline
measured in the same run, then the same with fix mdmonitor every 10 steps. Peak RSS per rank:
the maximum resident set size of each rank's lmp process (this script with --peak-rss between
mpirun and lmp). A size is skipped when its peak memory, all ranks together, predicted from
the sizes before (the line through the last two, or in proportion to the atoms from one)
exceeds --max-gib. --chunk N runs the pair style with `chunk N` (the model on at most N of a
rank's atoms per call, its memory bounded; see the README) at every size: a rank with N atoms or
fewer evaluates them at once, as without it; the default, 12 500, keeps 10^5 atoms within
16 GiB here (0 for none).

    .venv/bin/python benchmarks/lammps_large.py [--quick] [--json PATH] [--cells 6 14 29]
        [--steps 10] [--max-gib 16] [--chunk N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lammps_speed import EXAMPLES, run_lammps
from results import benchmark_parser, report, table

CELLS = [6, 14, 29]  # 864, 10 976 and 97 556 atoms
QUICK_CELLS = [4, 6]  # 256 and 864 atoms
EVERY = 10  # fix mdmonitor's interval (steps)
# the pair style's chunk: a rank's model call on at most this many atoms, so that 10^5 atoms fit
# 16 GiB on one and on two ranks (0.4 MB per atom of a call, 10^4 atoms and below unchunked)
CHUNK = 12500
# (case, in.bulk_speed.lmp variables); the first is the baseline of its size and rank count
CASES = [("plain pair style", {}), (f"LLPR every {EVERY} steps", {"every": EVERY})]
RANKS = (1, 2)
CLOCKS = ("wall", "CPU")  # seconds of the wall clock, of a rank's CPU time
GOAL_TIME = 1.15  # time per atom-step at 10^5 / 10^4, at most
GOAL_MEMORY = 1.15  # peak RSS growth per atom, 10^4 to 10^5 over 10^3 to 10^4, at most
GOAL_SPEED_UP = 1.8  # two ranks over one at 10^5, at least
PEAK_RSS_FILE = "{name}.rss.{rank}"  # one rank's peak RSS (KiB), in the run directory


def peak_rss_wrapper(name: str, command: list[str]) -> None:
    """Run `command` (one MPI rank's lmp), write its peak RSS (KiB) to PEAK_RSS_FILE and exit
    with its status."""
    pid = os.fork()
    if pid == 0:  # the child keeps every file descriptor: MPI's process manager needs them
        os.execvp(command[0], command)
    _, status, usage = os.wait4(pid, 0)
    rank = os.environ.get("PMI_RANK", "0")
    Path(PEAK_RSS_FILE.format(name=name, rank=rank)).write_text(f"{usage.ru_maxrss}\n")
    sys.exit(os.waitstatus_to_exitcode(status))


def measure(directory: Path, cells: int, ranks: int, case: str, variables: dict,
            steps: int, chunk: int) -> dict:
    """One run of in.bulk_speed.lmp: s/step of the wall clock ("wall") and of a rank's CPU time
    ("CPU": what a rank with a core of its own would take; MPI waits spin, so they count), the
    peak RSS of each rank (GiB) and the load average (1 min) before it."""
    name = f"bulk{cells}-{ranks}-{variables.get('every', 0)}"
    print(f"{4 * cells**3} atoms, {ranks} rank(s): {case}", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    wrapper = [sys.executable, __file__, "--peak-rss", name, "--"]
    result = run_lammps(directory, name, ranks,
                        {"model": "llpr.pt", "cells": cells, "steps": steps, "chunk": chunk,
                         **variables},
                        "in.bulk_speed.lmp", wrapper=wrapper)
    rss = [int((directory / PEAK_RSS_FILE.format(name=name, rank=rank)).read_text()) / 2**20
           for rank in range(ranks)]
    wall = result["seconds"] / result["steps"]
    return {"wall": wall, "CPU": wall * result["cpu_percent"] / 100, "rss": rss, "load": load}


def memory(found: dict, atoms: int, ranks: int) -> float:
    """Peak RSS of a size and rank count: its largest rank's in its cases, times the ranks
    (GiB)."""
    return ranks * max(max(run["rss"]) for (n, r, _), run in found.items()
                       if (n, r) == (atoms, ranks))


def predicted_memory(found: dict, measured: list[int], atoms: int, ranks: int,
                     chunk: int) -> float:
    """Peak RSS (GiB, all ranks) at `atoms` from the sizes measured before, in the atoms of a
    rank's model call (atoms / ranks, at most `chunk`; halos left out): on the line through the
    last two, or in proportion from one (0 before any)."""
    def per_call(n: int) -> float:
        return min(n / ranks, chunk or n)

    if not measured:
        return 0.0
    last = measured[-1]
    if len(measured) == 1:
        return memory(found, last, ranks) * per_call(atoms) / per_call(last)
    before = measured[-2]
    slope = ((memory(found, last, ranks) - memory(found, before, ranks))
             / (per_call(last) - per_call(before)))
    return memory(found, last, ranks) + slope * (per_call(atoms) - per_call(last))


def goals(found: dict, sizes: list[int], monitored: str) -> dict:
    """The goals of the module docstring at the largest sizes measured, for case `monitored`."""
    rows = []
    if len(sizes) >= 2:
        small, large = sizes[-2], sizes[-1]
        for clock in CLOCKS:
            for ranks in RANKS:  # time per atom-step of the sizes: the ratio of s/step per atom
                ratio = (found[large, ranks, monitored][clock] / large
                         / (found[small, ranks, monitored][clock] / small))
                rows.append([f"time per atom-step ({clock}), {large} / {small} atoms, {ranks} "
                             "rank(s)", ratio, "yes" if ratio <= GOAL_TIME else "no"])
    if len(sizes) >= 3:
        for ranks in RANKS:
            slopes = [(memory(found, b, ranks) - memory(found, a, ranks)) / (b - a)
                      for a, b in zip(sizes[-3:-1], sizes[-2:])]
            rows.append([f"peak RSS growth per atom, {sizes[-2]} to {sizes[-1]} over "
                         f"{sizes[-3]} to {sizes[-2]} atoms, {ranks} rank(s)",
                         slopes[1] / slopes[0], "yes" if slopes[1] <= GOAL_MEMORY * slopes[0]
                         else "no"])
    for clock in CLOCKS if sizes else ():
        speed_up = found[sizes[-1], 1, monitored][clock] / found[sizes[-1], 2, monitored][clock]
        rows.append([f"2 ranks over 1 ({clock}) at {sizes[-1]} atoms", speed_up,
                     "yes" if speed_up >= GOAL_SPEED_UP else "no"])
    return table(f"goals at the sizes measured (time at most {GOAL_TIME}x, memory growth at "
                 f"most {GOAL_MEMORY}x, speed-up at least {GOAL_SPEED_UP}x), LLPR every {EVERY} "
                 "steps", ["goal", "figure", "met"], rows)


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 3 and sys.argv[1] == "--peak-rss":
        return peak_rss_wrapper(sys.argv[2], sys.argv[4:])
    parser = benchmark_parser(__doc__)
    parser.add_argument("--cells", type=int, nargs="+", default=None,
                        help=f"cubic cells per side of each size (default {CELLS}, "
                             f"quick {QUICK_CELLS})")
    parser.add_argument("--steps", type=int, default=EVERY,
                        help=f"timed steps per run (default {EVERY}: one monitored)")
    parser.add_argument("--max-gib", type=float, default=16.0,
                        help="skip a size whose predicted peak memory, all ranks together, "
                             "exceeds this (GiB; default 16)")
    parser.add_argument("--chunk", type=int, default=CHUNK,
                        help="pair_style mdmonitor ... chunk N: at most N of a rank's atoms per "
                             f"model call (default {CHUNK}; 0: all at once)")
    parser.add_argument("--peak-rss", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cells_list = args.cells or (QUICK_CELLS if args.quick else CELLS)
    # fewer timed steps than the fix's interval monitor none: the plain pair style alone
    cases = CASES if args.steps >= EVERY else CASES[:1]
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    rows, found, measured, skipped = [], {}, [], []
    with tempfile.TemporaryDirectory(prefix="mdmonitor-lammps-large-") as directory:
        subprocess.run([sys.executable, str(EXAMPLES / "prepare.py")], cwd=directory, check=True,
                       stdout=subprocess.DEVNULL)
        for cells in cells_list:
            atoms = 4 * cells**3
            predicted = max(predicted_memory(found, measured, atoms, ranks, args.chunk)
                            for ranks in RANKS)
            if predicted > args.max_gib:
                skipped.append(f"{atoms} atoms skipped: a peak RSS of {predicted:.1f} GiB (all "
                               "ranks) predicted from the sizes before, more than --max-gib "
                               f"{args.max_gib:g}")
                print(skipped[-1], file=sys.stderr, flush=True)
                continue
            for ranks in RANKS:
                for case, variables in cases:
                    run = measure(Path(directory), cells, ranks, case, variables, args.steps,
                                  args.chunk)
                    found[atoms, ranks, case] = run
                    plain = found[atoms, ranks, CASES[0][0]]
                    one_rank = found[atoms, 1, case]
                    rows.append([atoms, ranks, case, run["wall"], run["CPU"],
                                 *(run[clock] * ranks / atoms * 1e6 for clock in CLOCKS),
                                 *(run[clock] / plain[clock] for clock in CLOCKS),
                                 *(one_rank[clock] / run[clock] for clock in CLOCKS),
                                 " / ".join(f"{gib:.2f}" for gib in run["rss"]),
                                 sum(run["rss"]) / atoms * 2**20, run["load"]])
            measured.append(atoms)
    tables = [table(f"LLPR pair style on fcc Cu bulk at 1200 K, {args.steps} NVE steps, "
                    "OMP_NUM_THREADS=1" + (f", chunk {args.chunk}" if args.chunk else ""),
                    ["atoms", "MPI ranks", "case", "s/step", "CPU s/step per rank",
                     "us per atom-step", "CPU us per atom-step", "x plain", "x plain (CPU)",
                     "speed-up over 1 rank", "speed-up (CPU)", "peak RSS per rank (GiB)",
                     "peak RSS per atom, all ranks (KiB)", "load (1 min) before"], rows),
              goals(found, measured, cases[-1][0])]
    notes = skipped + ([] if cases == CASES else [
        f"{args.steps} timed steps, fewer than fix mdmonitor's {EVERY}: no step would be "
        "monitored, the plain pair style alone ran"]) + [
        "x plain: against the plain pair style (the LLPR pair style alone: the model alone) of "
        "the same size and rank count, measured just before",
        "speed-up over 1 rank: the same case's s/step on one rank over this one's",
        "CPU: a rank's CPU time per step, the loop time x LAMMPS's `% CPU use` (average over "
        "ranks of process CPU time): what a rank with a core of its own would take, the figure "
        "to compare on a loaded machine; us per atom-step: all ranks' time over all atoms",
        "peak RSS: each rank's lmp process over its whole run (start-up, warm-up and timed "
        "steps); per atom: summed over the ranks, divided by all atoms",
        f"load: the 1-minute load average before each run ({os.cpu_count()} cores here)",
        f"load average (1 / 5 / 15 min) before: {load_before}, after: "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    report("LAMMPS at 10^3 to 10^5 atoms", tables, notes, __file__, argv, args.json)


if __name__ == "__main__":
    main()
