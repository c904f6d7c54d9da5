"""Aggregation throughput: local means within 4 A and 6 A on periodic fcc Cu, 10^3 to 10^6 atoms.

Cubic supercells of fcc Cu (a = 3.6 A, rattled by 0.05 A) with one random value per atom. Per
size and cutoff, each method in a fresh process: mdmonitor's `local_mean` (a fused cell-list
kernel that stores no pairs); (a) vesin's full neighbour list reduced with np.bincount; (b) ASE's
`neighbor_list` reduced likewise (only up to 10^4 atoms: it is too slow and large beyond); and
(c) vesin's neighbour list alone, the baseline. Prints the median wall time over repeated calls
after one untimed first call (numba compilation, caches), atoms/s, the ratio to (c) measured in the
same run, the rise of peak RSS over the child process's peak after set-up, CPU over wall time, and
how the time per atom grows from one size to the next (1.00 = linear scaling).

    .venv/bin/python benchmarks/aggregation.py [--quick] [--json out.json] [--threads N]
"""

from __future__ import annotations

import math
import multiprocessing
import os
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numba
import numpy as np
import vesin
from ase.build import bulk
from ase.neighborlist import neighbor_list

from mdmonitor import aggregation
from results import benchmark_parser, report, table

LATTICE = 3.6  # A, fcc Cu
CUTOFFS = (4.0, 6.0)  # A
# Supercell edges (in 4-atom cubic cells) for about 10^3, 10^4, 10^5 and 10^6 atoms, and the
# timed calls at each (full, quick); quick stops at 10^5 atoms.
REPEATS = {6: (20, 5), 14: (10, 3), 29: (5, 2), 63: (3, None)}
ASE_MAX_ATOMS = 20_000
# The smallest supercell edge whose search runs on numba's threads.
PARALLEL_EDGE = math.ceil((aggregation._PARALLEL_FROM / 4) ** (1 / 3))
MDMONITOR, VESIN_NUMPY, ASE_NUMPY, VESIN_LIST = (
    "mdmonitor local_mean", "(a) vesin list + NumPy", "(b) ASE list + NumPy",
    "(c) vesin list alone")
METHODS = (MDMONITOR, VESIN_NUMPY, ASE_NUMPY, VESIN_LIST)


def copper(edge: int):
    """fcc Cu supercell of edge^3 cubic cells (4 edge^3 atoms), rattled, and a value per atom."""
    atoms = bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat(edge)
    atoms.rattle(0.05, seed=edge)
    return atoms, np.random.default_rng(edge).normal(size=len(atoms))


def call_of(method: str, atoms, values, cutoff: float):
    """A no-argument call running `method` once on `atoms`."""
    positions, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
    vesin_list = vesin.NeighborList(cutoff=cutoff, full_list=True)
    calls = {
        MDMONITOR: lambda: aggregation.local_mean(positions, cell, pbc, values, cutoff),
        VESIN_NUMPY: lambda: aggregation.local_mean_over_pairs(
            *vesin_list.compute(positions, cell, pbc, quantities="ij"), values),
        ASE_NUMPY: lambda: aggregation.local_mean_over_pairs(
            *neighbor_list("ij", atoms, cutoff), values),
        VESIN_LIST: lambda: vesin_list.compute(positions, cell, pbc, quantities="ij"),
    }
    return calls[method]


def measure(method: str, edge: int, cutoff: float, repeats: int, threads: int) -> dict:
    """Run in a fresh process: median wall time (s) and peak RSS rise (MiB) of `method`, with
    numba on `threads` threads."""
    numba.set_num_threads(threads)
    # Compile (or load from numba's cache), and start threads where the search will use them,
    # before the peak is measured.
    parallel = method == MDMONITOR and edge >= PARALLEL_EDGE
    call_of(method, *copper(PARALLEL_EDGE if parallel else 1), cutoff)()
    call = call_of(method, *copper(edge), cutoff)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    call()  # untimed first call
    times = []
    cpu = time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"seconds": statistics.median(times), "cpu_per_wall": cpu / sum(times),
            "rss_mib": rise / 1024, "threads": numba_threads()}


def numba_threads() -> str:
    """numba's thread count and threading layer in this process."""
    return f"{numba.get_num_threads()} (numba's {numba.threading_layer()} threading layer)"


def in_fresh_process(*args) -> dict:
    """`measure(*args)` in a new child process (forked: imports are done), so that its peak RSS
    is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(measure, *args).result()


def scaling_rows(results: dict, edges: list[int]) -> list[list]:
    """Time per atom at each size over that at the size before, per cutoff and method."""
    rows = []
    for cutoff in CUTOFFS:
        for method in METHODS:
            row = [method, cutoff]
            for small, large in zip(edges, edges[1:]):
                if (method, small, cutoff) in results and (method, large, cutoff) in results:
                    per_atom = [results[method, e, cutoff]["seconds"] / (4 * e ** 3)
                                for e in (small, large)]
                    row.append(per_atom[1] / per_atom[0])
                else:
                    row.append("-")
            rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS,
                        help="numba threads for mdmonitor's parallel search (default: "
                             "%(default)s, numba's default here)")
    args = parser.parse_args(argv)
    edges = [edge for edge, (full, quick) in REPEATS.items() if not args.quick or quick]
    results, notes, tables = {}, [], []
    for cutoff in CUTOFFS:
        rows = []
        for edge in edges:
            n_atoms = 4 * edge ** 3
            for method in METHODS:
                if method == ASE_NUMPY and n_atoms > ASE_MAX_ATOMS:
                    notes.append(skipped_ase(results, edges, edge, cutoff))
                    print(notes[-1], flush=True)
                    continue
                print(f"{n_atoms} atoms, {cutoff} A: {method} ...", flush=True)
                results[method, edge, cutoff] = in_fresh_process(
                    method, edge, cutoff, REPEATS[edge][args.quick], args.threads)
            baseline = results[VESIN_LIST, edge, cutoff]["seconds"]
            rows += [[n_atoms, method, r["seconds"], n_atoms / r["seconds"], r["seconds"] / baseline,
                      r["rss_mib"], r["cpu_per_wall"]]
                     for method in METHODS if (r := results.get((method, edge, cutoff)))]
        tables.append(table(f"local mean within {cutoff} A",
                            ["atoms", "method", "s (median)", "atoms/s", "x vesin list alone",
                             "peak RSS rise (MiB)", "CPU / wall"], rows))
    labels = [f"{4 * large ** 3} vs {4 * small ** 3} atoms"
              for small, large in zip(edges, edges[1:])]
    tables.append(table("time per atom over that at the next smaller size (1.00 = linear)",
                        ["method", "cutoff (A)", *labels], scaling_rows(results, edges)))
    notes += [
        f"mdmonitor's search runs on one numba thread below {aggregation._PARALLEL_FROM} atoms, "
        f"from there on {results[MDMONITOR, edges[-1], CUTOFFS[0]]['threads']}; vesin's list "
        "runs on threads of its own",
        "median of " + ", ".join(f"{REPEATS[e][args.quick]} ({4 * e ** 3} atoms)" for e in edges)
        + " timed calls, after one untimed first call, each method and size in its own child "
        "process; CPU / wall: the process's CPU time over the wall time of those calls "
        "(about 1 for one busy core)",
        "peak RSS rise: ru_maxrss after the calls minus before them, after imports, set-up and "
        "a warm-up call (on 4 atoms; on the smallest system searched on numba's threads, "
        f"{4 * PARALLEL_EDGE ** 3} atoms, where mdmonitor's will be), so that numba's compilation "
        "and thread start are not counted",
        f"load average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} cores; ratios come from the same run",
    ]
    report("Aggregation throughput (local mean over cutoff spheres)", tables, notes, __file__,
           argv, args.json)


def skipped_ase(results: dict, edges: list[int], edge: int, cutoff: float) -> str:
    """Why (b) is skipped at `edge`, with its time and memory projected from the largest measured."""
    n_atoms = 4 * edge ** 3
    measured = [e for e in edges if (ASE_NUMPY, e, cutoff) in results]
    why = f"{ASE_NUMPY} skipped at {n_atoms} atoms, {cutoff} A: too slow and large"
    if not measured:
        return why
    last = results[ASE_NUMPY, measured[-1], cutoff]
    factor = n_atoms / (4 * measured[-1] ** 3)
    return (f"{why} (linear from {4 * measured[-1] ** 3} atoms: about "
            f"{last['seconds'] * factor:.0f} s and {last['rss_mib'] * factor / 1024:.1f} GiB a call)")


if __name__ == "__main__":
    main()
