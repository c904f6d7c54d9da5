"""LAMMPS speed with the mdmonitor plugin: the pair style alone, with fix mdmonitor, with ghost
atoms, on one and two MPI ranks, for the committee and the LLPR (quick: LLPR, fewer steps); and
what MPI ranks gain on fcc Cu bulk (LLPR, 4000 and 13 500 atoms; quick: 864): one rank, two
ranks, one rank with two threads, and the graph each rank evaluates against its local atoms.

Runs `examples/lammps/prepare.py` in a temporary directory (the bundled estimators exported and
the 96-atom demo slab), then `examples/lammps/in.speed.lmp` (NVT at 600 K; a 10-step warm-up
run, then the timed run) once per case with `.venv/bin/lmp` (under `.venv/bin/mpirun -np 2` for
two ranks), OMP_NUM_THREADS=1. From each log: steps/s of the timed run (its "Loop time" line)
and the "Modify" row of its MPI task timing breakdown (the fixes' time, average over ranks),
with the time per step relative to the plain pair style on one rank of the same invocation.
The bulk cases run `examples/lammps/in.bulk_speed.lmp` (NVE, a 1-step warm-up run, then the
timed run), the graph sizes from the pair style's log lines of the two-rank run.

    .venv/bin/python benchmarks/lammps_speed.py [--quick] [--json PATH] [--steps 100]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from results import ROOT, benchmark_parser, report, table

BIN = ROOT / ".venv" / "bin"
EXAMPLES = ROOT / "examples" / "lammps"
LOOP = re.compile(r"^Loop time of (\S+) on (\d+) procs for (\d+) steps", re.MULTILINE)
CPU_USE = re.compile(r"^(\S+)% CPU use with", re.MULTILINE)
# (case, MPI ranks, in.speed.lmp variables); the first is the baseline, the last repeats it to
# show the run-to-run noise
CASES = [
    ("pair style alone", 1, {}),
    ("+ fix mdmonitor every step", 1, {"every": 1}),
    ("+ fix mdmonitor every 10 steps", 1, {"every": 10}),
    ("pair style, ghosts yes", 1, {"ghosts": "yes"}),
    ("pair style alone", 2, {}),
    ("+ fix mdmonitor every step", 2, {"every": 1}),
    ("pair style alone (again)", 1, {}),
]


def timing(log: str) -> dict:
    """Steps, loop seconds, the CPU use (% of the loop, average over ranks) and the Modify row
    (average s, % of the loop) of the last run."""
    loops = list(LOOP.finditer(log))
    if not loops:
        raise RuntimeError(f"no 'Loop time' line in the LAMMPS log; its end:\n{log[-2000:]}")
    last = loops[-1]
    modify = re.search(r"^Modify\s*\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|(.*)$",
                       log[last.end():], re.MULTILINE)
    cpu = CPU_USE.search(log, last.end())
    return {"seconds": float(last.group(1)), "steps": int(last.group(3)),
            "cpu_percent": float(cpu.group(1)),
            "modify": float(modify.group(2)), "modify_percent": float(modify.group(5))}


def run_lammps(directory: Path, name: str, ranks: int, variables: dict,
               script: str = "in.speed.lmp", threads: int = 1) -> dict:
    """Run `script` in `directory` with `variables`; the timing of its timed run (and its log)."""
    command = [str(BIN / "lmp"), "-in", str(EXAMPLES / script), "-log", f"{name}.log",
               "-screen", "none"]
    for key, value in variables.items():
        command += ["-var", key, str(value)]
    if ranks > 1:
        command = [str(BIN / "mpirun"), "-np", str(ranks), *command]
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    log = (directory / f"{name}.log").read_text() if (directory / f"{name}.log").exists() else ""
    if done.returncode != 0:
        raise RuntimeError(f"LAMMPS failed ({done.returncode}): {' '.join(command)}\n"
                           f"{log[-2000:]}{done.stdout[-1000:]}{done.stderr[-1000:]}")
    return {**timing(log), "log": log}


def measure(directory: Path, model: str, steps: int) -> dict:
    """The table of one exported estimator over CASES."""
    rows = []
    for k, (case, ranks, variables) in enumerate(CASES):
        print(f"{model}: {case}, {ranks} rank(s)", file=sys.stderr, flush=True)
        result = run_lammps(directory, f"{model}-{k}", ranks,
                            {"model": f"{model}.pt", "steps": steps, **variables})
        per_step = result["seconds"] / result["steps"]
        baseline = rows[0][2] if rows else 1 / per_step
        rows.append([case, ranks, 1 / per_step, baseline * per_step,
                     result["modify"] / result["steps"] * 1e3, result["modify_percent"]])
    return table(f"{model}: 96-atom Cu(100) slab, {steps} NVT steps",
                 ["case", "MPI ranks", "steps/s", "time/step x plain", "Modify ms/step",
                  "Modify % of loop"], rows)


# (case, MPI ranks, threads per rank) on bulk; the first is the baseline
BULK_CASES = [("1 rank", 1, 1), ("2 ranks", 2, 1), ("1 rank x 2 threads", 1, 2)]
GRAPH = re.compile(r"rank (\d+): (\d+) local, (\d+) ghost, (\d+) in graph; embedded (\d+) / "
                   r"(\d+); layer 1 (\d+) / (\d+); layer 2 (\d+) / (\d+)")


def measure_bulk(directory: Path, model: str, cells: int, steps: int) -> list[dict]:
    """Speed over BULK_CASES on cells^3 cubic fcc Cu cells, and the graph of each rank."""
    rows, graphs = [], []
    for case, ranks, threads in BULK_CASES:
        print(f"{model} bulk {cells}^3: {case}", file=sys.stderr, flush=True)
        result = run_lammps(directory, f"{model}-bulk{cells}-{ranks}x{threads}", ranks,
                            {"model": f"{model}.pt", "cells": cells, "steps": steps},
                            "in.bulk_speed.lmp", threads)
        per_step = result["seconds"] / result["steps"]
        baseline = rows[0][3] if rows else per_step
        # CPU seconds per step of a rank (all its threads): on a busy machine, the time per
        # step a rank would take with a core of its own (MPI waits spin, so they count)
        cpu = per_step * result["cpu_percent"] / 100
        cpu_baseline = rows[0][5] if rows else cpu
        rows.append([case, ranks, threads, per_step, baseline / per_step, cpu,
                     cpu_baseline / cpu if threads == 1 else "-"])
        if threads == 1:
            for rank, local, ghost, nodes, *sizes in GRAPH.findall(result["log"])[-ranks:]:
                edges = int(sizes[3]) + int(sizes[5])
                graphs.append([case, rank, local, ghost, nodes, f"{sizes[2]} / {sizes[3]}",
                               f"{sizes[4]} / {sizes[5]}", edges, edges / int(local)])
    atoms = 4 * cells**3
    return [table(f"{model}: fcc Cu bulk, {cells}^3 cubic cells ({atoms} atoms), {steps} NVE "
                  "steps", ["case", "MPI ranks", "threads per rank", "s/step",
                            "speed-up over 1 rank", "CPU s/step per rank",
                            "speed-up from CPU s/step"], rows),
            table(f"{model}: the graph each rank evaluates, {atoms} atoms",
                  ["case", "rank", "local atoms", "LAMMPS ghost atoms", "graph atoms",
                   "layer 1 atoms / edges", "layer 2 atoms / edges", "edges of both layers",
                   "per local atom"], graphs)]


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of the timed run (default 100, quick 20)")
    args = parser.parse_args(argv)
    steps = args.steps or (20 if args.quick else 100)
    models = ["llpr"] if args.quick else ["committee", "llpr"]
    with tempfile.TemporaryDirectory(prefix="mdmonitor-lammps-speed-") as directory:
        subprocess.run([sys.executable, str(EXAMPLES / "prepare.py")], cwd=directory, check=True,
                       stdout=subprocess.DEVNULL)
        tables = [measure(Path(directory), model, steps) for model in models]
        for cells in ([6] if args.quick else [10, 15]):
            tables += measure_bulk(Path(directory), "llpr", cells, 2)
    report("LAMMPS speed with the mdmonitor plugin", tables,
           ["time/step x plain: against the pair style alone on one rank, first case of the "
            "same table; the repeated plain run at the end shows the run-to-run noise",
            "Modify is the time of all fixes: fix nvt alone in the plain runs, fix nvt + "
            "fix mdmonitor (cutoff 4 A, threshold 0.1) in the others; on two ranks it also "
            "holds the wait for the slower rank in the fixes' communication (fix nvt's "
            "temperature sum, the monitor's ghost values and maximum)",
            "one rank uses the periodic graph without ghost atoms unless `ghosts yes`; two "
            "ranks evaluate ghost atoms up to num_interactions x r_max + skin (10 A)",
            "LAMMPS with OMP_NUM_THREADS=1 (torch on one thread per rank), except `1 rank x "
           "2 threads` (OMP_NUM_THREADS=2)",
           "bulk: two ranks split the cell along x; ghost images of one atom are one graph "
           "atom (so y and z, with one rank each, add none), layer 1 updates the atoms within "
           "one edge (r_max = 4 A) of a local atom, layer 2 the local atoms only (18 edges "
           "each in fcc Cu); one rank evaluates 18 edges per atom in both layers",
           "CPU s/step per rank: the timed run's loop time x its `% CPU use` (LAMMPS's average "
           "over ranks of process CPU time) per step; its speed-up column compares one-thread "
           "ranks only and is what a machine with a free core per rank would show"],
           __file__, argv, args.json)


if __name__ == "__main__":
    main()
