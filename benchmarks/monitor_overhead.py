"""Monitoring overhead in ASE: the demo slab (96 atoms) and that slab repeated 5 x 5 x 1 (2400).

Times, as medians over rounds that interleave the cases, each call on new positions: a plain
single-model MACECalculator force call (the baseline), a MonitoredCalculator call with each
estimator of the same model (last-layer LPR, its posterior force spread from 4 samples, LTAU,
latent GMM), with the 4-member committee, the committee driven by its member 0, the force
LLPR and the LLPR, LTAU and GMM, each monitored every 10th call (the mean over 10 consecutive
calls: one with the uncertainty, nine with the model alone), and aggregation + triggering
alone. Prints absolute times and ratios to the baseline measured in the same run, and to the
model alone through mdmonitor's graph code (what the single-model estimators run), and torch's
thread count of every row (one thread).

    .venv/bin/python benchmarks/monitor_overhead.py [--quick] [--json PATH] [--repeats 30]
"""

from __future__ import annotations

import os
import statistics
import time

from mdmonitor.common import mace_imports  # noqa: F401  (e3nn first, its constants trusted)
import numpy as np
import torch
from mace.calculators import MACECalculator

from mdmonitor import Committee, LastLayerLPR, MonitoredCalculator, aggregate, demo_models
from mdmonitor.common.trusted_pickles import trusted_pickle_loads
from mdmonitor.demo import demo_slab
from mdmonitor.estimators.fitted import load_fitted
from mdmonitor.extraction.relaxation import ForceFieldCalculator
from results import benchmark_parser, report, table

CUTOFF = 4.0  # A
LARGE_REPEAT = (5, 5, 1)
DRIVEN_INTERVAL = 10  # the driven committee's monitor interval: one full call in ten
FORCE_SAMPLES = 4  # posterior samples of the force LLPR (fit-llpr --target forces default)
FORCE_LLPR = f"force LLPR ({FORCE_SAMPLES} posterior samples)"
# the single-model estimators of the energy and latent space, (row name, bundled kind)
SINGLE_MODEL = {"last-layer LPR": "llpr", "LTAU": "ltau", "latent GMM": "gmm"}


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


def interleaved_times(cases, atoms, rounds: int, seed: int = 0) -> list[float]:
    """Median wall time (s) per call of every case (label, call, calls), over `rounds` rounds in
    which each case in turn makes `calls` calls, each on freshly rattled atoms (its time in a
    round: their mean), so that a change of the machine's load hits every case alike."""
    rng = np.random.default_rng(seed)
    start = atoms.positions.copy()
    for _, call, _ in cases:
        call(atoms)  # warm-up: compilation, caches (a monitored call's first call is step 0)
    times = [[] for _ in cases]
    for _ in range(rounds):
        for per_call, (_, call, calls) in zip(times, cases):
            elapsed = 0.0
            for _ in range(calls):
                atoms.positions = start + rng.normal(scale=0.05, size=start.shape)
                begin = time.perf_counter()
                call(atoms)
                elapsed += time.perf_counter() - begin
            per_call.append(elapsed / calls)
    atoms.positions = start
    return [statistics.median(t) for t in times]


def force_call(calc):
    def call(atoms):
        atoms.calc = calc
        atoms.get_forces()
    return call


def measure(atoms, atomic: dict, plain, estimators: dict, driven, repeats: int) -> list[list]:
    """Rows (case, ms, x plain, torch threads) for one structure; each estimator's threshold is
    the 90th percentile of its atomic uncertainties `atomic[name]` (the driven committee's is
    the committee's)."""
    thresholds = {name: float(np.quantile(values, 0.9)) for name, values in atomic.items()}

    def aggregation_and_trigger(frame):
        local = aggregate(frame, atomic["4-member committee"], CUTOFF)
        np.flatnonzero(local > thresholds["4-member committee"])

    alone = ForceFieldCalculator(driven.models[0])
    cases = [("plain MACE force call (1 model)", force_call(plain), 1),
             ("member 0 alone through mdmonitor's graph code, unmonitored",
              force_call(alone), 1),
             (f"member 0 alone through mdmonitor's graph code, {DRIVEN_INTERVAL} calls in a "
              "row (mean per call)", force_call(alone), DRIVEN_INTERVAL)]
    cases += [(f"monitored call, {name}",
               force_call(MonitoredCalculator(estimator, cutoff=CUTOFF,
                                              threshold=thresholds[name])), 1)
              for name, estimator in estimators.items()]
    cases.append((f"4-member committee driven by member 0, monitored every "
                  f"{DRIVEN_INTERVAL}th call (mean per call)",
                  force_call(MonitoredCalculator(driven, cutoff=CUTOFF,
                                                 threshold=thresholds["4-member committee"],
                                                 interval=DRIVEN_INTERVAL)), DRIVEN_INTERVAL))
    cases += [(f"{name}, monitored every {DRIVEN_INTERVAL}th call (mean per call)",
               force_call(MonitoredCalculator(estimators[name], cutoff=CUTOFF,
                                              threshold=thresholds[name],
                                              interval=DRIVEN_INTERVAL)), DRIVEN_INTERVAL)
              for name in (FORCE_LLPR, *SINGLE_MODEL)]
    cases.append(("aggregation + triggering alone", aggregation_and_trigger, 1))
    seconds = interleaved_times(cases, atoms, repeats)
    # the model alone timed the same way: one call, or blocks of DRIVEN_INTERVAL calls in a row
    alone_seconds = {1: seconds[1], DRIVEN_INTERVAL: seconds[2]}
    return [[label, s * 1e3, s / seconds[0], s / alone_seconds[calls], torch.get_num_threads()]
            for (label, _, calls), s in zip(cases, seconds)]


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=None,
                        help="calls per median on the 96-atom slab (default 30, quick 6); "
                             "a tenth of that, at least 1, on the large cell")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = args.repeats or (6 if args.quick else 30)
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    models = demo_models()
    with trusted_pickle_loads():  # the bundled model file, a pickle
        plain = MACECalculator(model_paths=models["committee"][0], device="cpu",
                               default_dtype="float64")
    estimators = {name: load_fitted(kind, models[kind]) for name, kind in SINGLE_MODEL.items()}
    energy = estimators["last-layer LPR"]
    estimators[FORCE_LLPR] = LastLayerLPR(energy.model, energy.hessian, energy.regularizer,
                                          energy.forces, target="forces",
                                          samples=FORCE_SAMPLES)
    estimators["4-member committee"] = Committee.from_mace(models["committee"])
    driven = Committee.from_mace(models["committee"], driver=0)
    slab = demo_slab()
    large = slab.repeat(LARGE_REPEAT)
    atomic = {name: e.predict(slab).atomic_uncertainty for name, e in estimators.items()}
    # the repeated slab's atoms are the slab's, image after image, in identical environments
    tiled = {name: np.tile(values, len(large) // len(slab)) for name, values in atomic.items()}
    cases = [(f"{len(slab)}-atom Cu(100) slab (demo)", slab, atomic, repeats),
             (f"{len(large)}-atom Cu(100) slab (demo slab x {' x '.join(map(str, LARGE_REPEAT))})",
              large, tiled, max(1, repeats // 10))]
    tables = [table(f"{caption}, median of {n_calls} interleaved round{'s' * (n_calls > 1)}",
                    ["case", "ms per call", "x plain call", "x model alone", "torch threads"],
                    measure(atoms, values, plain, estimators, driven, n_calls))
              for caption, atoms, values, n_calls in cases]
    report("Monitoring overhead in ASE", tables,
           ["plain call: mace-torch's MACECalculator with the committee's model 0 (float64); "
            "LLPR, LTAU and GMM are of that model; they evaluate it through mdmonitor's own "
            "graph code, which is why they can beat the plain calculator call",
            f"aggregation cutoff {CUTOFF} A, threshold the 90th percentile of each estimator's "
            "atomic uncertainty; aggregation + triggering (with the committee's) is part of "
            "every monitored call",
            "the driven committee: member 0's energy and forces on every call, the 4 members "
            f"on every {DRIVEN_INTERVAL}th (where it is monitored); its row is the mean over "
            f"{DRIVEN_INTERVAL} consecutive calls, timed as one block per round; likewise the "
            "force LLPR, whose samples cost one backward pass of the model each, and the LLPR, "
            "LTAU and GMM, which run the model alone on the calls not monitored",
            "x model alone: against member 0 alone through mdmonitor's graph code (the model "
            "call the single-model estimators make) timed the same way: single calls against "
            f"the second row, the rows of {DRIVEN_INTERVAL} calls in a row against the third "
            "(so that calls in a row, with the caches of one calculator, count neither for nor "
            "against)",
            "torch on 1 thread; each call on new, rattled positions (0.05 A), after one "
            "warm-up call; rounds interleave the cases",
            f"load average (1 / 5 / 15 min) before: {load_before}, after: "
            f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}"],
           __file__, argv, args.json)


if __name__ == "__main__":
    main()
