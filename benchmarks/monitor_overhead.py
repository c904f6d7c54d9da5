"""Monitoring overhead in ASE on the demo system (96-atom Cu(100) slab).

Times, as medians over repeated calls on new positions each time: a plain single-model
MACECalculator force call (the baseline), a MonitoredCalculator call with the last-layer LPR of
the same model, with the 4-member committee, and aggregation + triggering alone. Prints absolute
times and ratios to the baseline measured in the same run.

    .venv/bin/python benchmarks/monitor_overhead.py [--repeats 30] [--atoms 96]
"""

from __future__ import annotations

import argparse
import statistics
import time

import mdmonitor  # noqa: F401  (sets the e3nn/torch load flag before MACE is imported)
import numpy as np
from mace.calculators import MACECalculator

from mdmonitor import Committee, LastLayerLPR, MonitoredCalculator, aggregate, demo_models
from mdmonitor.demo import demo_slab


def median_time(call, atoms, repeats: int, seed: int = 0) -> float:
    """Median wall time (s) of call(atoms) over `repeats` calls, each on freshly rattled atoms."""
    rng = np.random.default_rng(seed)
    start = atoms.positions.copy()
    call(atoms)  # warm-up: compilation, caches
    times = []
    for _ in range(repeats):
        atoms.positions = start + rng.normal(scale=0.05, size=start.shape)
        begin = time.perf_counter()
        call(atoms)
        times.append(time.perf_counter() - begin)
    atoms.positions = start
    return statistics.median(times)


def force_call(calc):
    def call(atoms):
        atoms.calc = calc
        atoms.get_forces()
    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--repeat-cell", type=int, nargs=3, default=(1, 1, 1),
                        help="replicate the demo slab, e.g. 3 3 1 for 864 atoms")
    args = parser.parse_args()
    models = demo_models()
    atoms = demo_slab().repeat(tuple(args.repeat_cell))
    plain = MACECalculator(model_paths=models["committee"][0], device="cpu",
                           default_dtype="float64")
    llpr = LastLayerLPR.load(models["llpr"])
    committee = Committee.from_mace(models["committee"])
    atomic = committee.predict(atoms).atomic_uncertainty
    threshold = float(np.quantile(atomic, 0.9))

    def aggregation_and_trigger(frame):
        local = aggregate(frame, atomic, 4.0)
        np.flatnonzero(local > threshold)

    rows = [
        ("plain MACE force call (1 model)", force_call(plain)),
        ("monitored call, LLPR", force_call(MonitoredCalculator(llpr, cutoff=4.0,
                                                                threshold=threshold))),
        ("monitored call, 4-member committee",
         force_call(MonitoredCalculator(committee, cutoff=4.0, threshold=threshold))),
        ("aggregation + triggering alone", aggregation_and_trigger),
    ]
    print(f"{len(atoms)} atoms, median of {args.repeats} calls")
    baseline = None
    for label, call in rows:
        seconds = median_time(call, atoms, args.repeats)
        baseline = baseline or seconds
        print(f"{label:40s} {seconds * 1e3:9.2f} ms   {seconds / baseline:6.3f} x plain")


if __name__ == "__main__":
    main()
