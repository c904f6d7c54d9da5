"""LAMMPS speed with the mdmonitor plugin: the pair style alone, with fix mdmonitor, with ghost
atoms, on one and two MPI ranks, for the committee and the LLPR (quick: LLPR, fewer steps); and
the committee driven by its member 0 (exported with `--drive member:0`) monitored every 10
steps against that pair style alone (member 0 on every step: one model), on the 96-atom slab
and its 3 x 3 x 1 repeat (864 atoms), cases interleaved over rounds (not in quick).

Runs `examples/lammps/prepare.py` in a temporary directory (the bundled estimators exported and
the 96-atom demo slab), then `examples/lammps/in.speed.lmp` (NVT at 600 K; a 10-step warm-up
run, then the timed run) once per case with `.venv/bin/lmp` (under `.venv/bin/mpirun -np 2` for
two ranks), OMP_NUM_THREADS=1. From each log: steps/s of the timed run (its "Loop time" line)
and the "Modify" row of its MPI task timing breakdown (the fixes' time, average over ranks),
with the time per step relative to the plain pair style on one rank of the same invocation
(for the driven tables: the median over rounds, relative to the driven pair style alone).

    .venv/bin/python benchmarks/lammps_speed.py [--quick] [--json PATH] [--steps 100]
        [--rounds 3]
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
# the committee driven by member 0: its pair style alone evaluates member 0 only (one model)
DRIVEN = "committee-driven"
DRIVEN_CASES = [
    ("driven committee, pair style alone (one model per step)", 1, {}),
    ("driven committee + fix mdmonitor every 10 steps", 1, {"every": 10}),
    ("committee mean + fix mdmonitor every 10 steps (default)", 1,
     {"model": "committee.pt", "every": 10}),
]
EXPORT_DRIVEN = ("from mdmonitor import Committee, demo_models\n"
                 "from mdmonitor.lammps.export import export\n"
                 f"export(Committee.from_mace(demo_models()['committee'], driver=0), "
                 f"'{DRIVEN}.pt')\n")


def timing(log: str) -> dict:
    """Steps, loop seconds and the Modify row (average s, % of the loop) of the last run."""
    loops = list(LOOP.finditer(log))
    if not loops:
        raise RuntimeError(f"no 'Loop time' line in the LAMMPS log; its end:\n{log[-2000:]}")
    last = loops[-1]
    modify = re.search(r"^Modify\s*\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|(.*)$",
                       log[last.end():], re.MULTILINE)
    return {"seconds": float(last.group(1)), "steps": int(last.group(3)),
            "modify": float(modify.group(2)), "modify_percent": float(modify.group(5))}


def run_lammps(directory: Path, name: str, ranks: int, variables: dict) -> dict:
    """Run in.speed.lmp in `directory` with `variables`; the timing of its timed run."""
    command = [str(BIN / "lmp"), "-in", str(EXAMPLES / "in.speed.lmp"), "-log", f"{name}.log",
               "-screen", "none"]
    for key, value in variables.items():
        command += ["-var", key, str(value)]
    if ranks > 1:
        command = [str(BIN / "mpirun"), "-np", str(ranks), *command]
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = (directory / f"{name}.log").read_text() if (directory / f"{name}.log").exists() else ""
    if done.returncode != 0:
        raise RuntimeError(f"LAMMPS failed ({done.returncode}): {' '.join(command)}\n"
                           f"{log[-2000:]}{done.stdout[-1000:]}{done.stderr[-1000:]}")
    return timing(log)


def measure(directory: Path, model: str, steps: int, cases=CASES, repeat: int = 1,
            rounds: int = 1) -> dict:
    """The table of one exported estimator over `cases` on the slab repeated `repeat` x
    `repeat` x 1: per case the median over `rounds` rounds that run every case in turn."""
    timings = [[] for _ in cases]
    for round_ in range(rounds):
        for k, (case, ranks, variables) in enumerate(cases):
            print(f"{model}: {case}, {ranks} rank(s), round {round_ + 1}", file=sys.stderr,
                  flush=True)
            timings[k].append(run_lammps(directory, f"{model}-{k}", ranks,
                                         {"model": f"{model}.pt", "steps": steps,
                                          "repeat": repeat, **variables}))
    rows = []
    for (case, ranks, _), results in zip(cases, timings):
        result = sorted(results, key=lambda r: r["seconds"])[len(results) // 2]
        per_step = result["seconds"] / result["steps"]
        baseline = rows[0][2] if rows else 1 / per_step
        rows.append([case, ranks, 1 / per_step, baseline * per_step,
                     result["modify"] / result["steps"] * 1e3, result["modify_percent"], 1])
    n_atoms = 96 * repeat * repeat
    return table(f"{model}: {n_atoms}-atom Cu(100) slab, {steps} NVT steps"
                 + (f", median of {rounds} interleaved rounds" if rounds > 1 else ""),
                 ["case", "MPI ranks", "steps/s", "time/step x plain", "Modify ms/step",
                  "Modify % of loop", "OMP_NUM_THREADS"], rows)


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of the timed run (default 100, quick 20)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the driven-committee tables (default 3)")
    parser.add_argument("--driven-only", action="store_true",
                        help="only the driven-committee tables")
    parser.add_argument("--repeat", type=int, nargs="+", default=[1, 3],
                        help="driven tables for the slab repeated N x N x 1 (default 1 3: 96 "
                             "and 864 atoms)")
    args = parser.parse_args(argv)
    steps = args.steps or (20 if args.quick else 100)
    models = [] if args.driven_only else ["llpr"] if args.quick else ["committee", "llpr"]
    with tempfile.TemporaryDirectory(prefix="mdmonitor-lammps-speed-") as directory:
        subprocess.run([sys.executable, str(EXAMPLES / "prepare.py")], cwd=directory, check=True,
                       stdout=subprocess.DEVNULL)
        tables = [measure(Path(directory), model, steps) for model in models]
        if not args.quick:
            subprocess.run([sys.executable, "-c", EXPORT_DRIVEN], cwd=directory, check=True)
            tables += [measure(Path(directory), DRIVEN, steps, DRIVEN_CASES, repeat,
                               args.rounds) for repeat in args.repeat]
    report("LAMMPS speed with the mdmonitor plugin", tables,
           ["time/step x plain: against the pair style alone on one rank, first case of the "
            "same table; the repeated plain run at the end shows the run-to-run noise",
            "Modify is the time of all fixes: fix nvt alone in the plain runs, fix nvt + "
            "fix mdmonitor (cutoff 4 A, threshold 0.1) in the others; on two ranks it also "
            "holds the wait for the slower rank in the fixes' communication (fix nvt's "
            "temperature sum, the monitor's ghost values and maximum)",
            "one rank uses the periodic graph without ghost atoms unless `ghosts yes`; two "
            "ranks evaluate ghost atoms up to num_interactions x r_max + skin (10 A)",
            "driven committee: `mdmonitor export-lammps --committee ... --drive member:0`; "
            "its pair style evaluates member 0 on every step and the 4 members on the steps "
            "fix mdmonitor reads (every 10th); time/step x plain there is against the driven "
            "pair style alone (member 0 only) of the same table",
            "LAMMPS with OMP_NUM_THREADS=1 (torch on one thread per rank)"],
           __file__, argv, args.json)


if __name__ == "__main__":
    main()
