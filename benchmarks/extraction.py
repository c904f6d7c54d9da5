"""Extraction cost on the demo system: cutting a box, relaxing its buffer, and how long the MD
is held up per box with the relaxation inline or in a background worker.

Runs monitored Langevin MD of the 96-atom demo slab (600 K, 2 fs) with an Extractor cutting
periodic cubes (10 A, core radius 4 A) around atoms above the threshold, once with the border
relaxed inline (in the force call) and once in a background worker process, for the LLPR and the
committee (quick: LLPR, one box). Times are in seconds and in monitored force calls of the same
estimator measured in the same run (the baseline); torch on one thread. Then the cost of holding
the O-H bonds of a water cube's buffer through its relaxation (`molecules=True`).

    .venv/bin/python benchmarks/extraction.py [--quick] [--json PATH] [--uq llpr committee]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import ase.io
import numpy as np
import torch
from ase import units
from ase.calculators.emt import EMT
from ase.constraints import FixBondLengths

from mdmonitor import Committee, Extractor, LastLayerLPR, MonitoredCalculator, demo_models
from mdmonitor.demo import DEMO_THRESHOLDS, demo_slab
from mdmonitor.extraction import relaxation
from mdmonitor.extraction.box_quality import hydrogen_partners
from mdmonitor.extraction.cutting import cut_cube
from mdmonitor.md import run_md
from labeling import water_box
from monitor_overhead import force_call, median_time
from results import benchmark_parser, report, table

CUBE = {"core_radius": 4.0, "box_length": 10.0}  # A
# local uncertainty that triggers a cut; the committee's is below the demo's, so that its
# boxes come within 60 steps
THRESHOLDS = {"llpr": DEMO_THRESHOLDS["llpr"], "committee": 0.03}


def run(mode: str, estimator, threshold: float, steps: int, boxes: int, workdir: Path) -> dict:
    """Monitored MD with extraction in relax `mode`: boxes written, MD hold-ups and relaxation
    times per box (s), MD wall time and wall time until every box was written (s)."""
    extractor = Extractor("cube", queue=workdir / mode, relax=mode, max_boxes=boxes, cooldown=10,
                          **CUBE)
    calc = MonitoredCalculator(estimator, cutoff=4.0, threshold=threshold,
                               timestep=2.0 * units.fs, extractor=extractor)
    start = time.perf_counter()
    run_md(demo_slab(), calc, steps=steps, temperature_K=600.0, timestep_fs=2.0, progress=False,
           trajectory=None)
    md_seconds = time.perf_counter() - start
    extractor.close()
    relax = [ase.io.read(p).info.get("relax_seconds", float("nan"))
             for p in extractor.queue.boxes("pending")]
    return {"boxes": len(relax), "held": extractor.blocking_seconds, "relax": relax,
            "md": md_seconds, "total": time.perf_counter() - start}


def measure(name: str, estimator, steps: int, boxes: int, repeats: int) -> tuple[dict, list[str]]:
    """The table and notes for one estimator."""
    atoms = demo_slab()
    call = median_time(force_call(MonitoredCalculator(estimator, cutoff=4.0)), atoms, repeats)
    centre = int(np.argmax(estimator.predict(atoms).atomic_uncertainty))
    notes = []
    with tempfile.TemporaryDirectory() as workdir:
        cutter = Extractor("cube", queue=Path(workdir) / "cut", **CUBE)
        cut = median_time(lambda frame: cutter.cut(frame, centre), atoms, repeats)
        rows = [["monitored force call (baseline)", call, 1.0],
                ["cut one box (Extractor.cut)", cut, cut / call]]
        for mode in ("inline", "worker"):
            result = run(mode, estimator, THRESHOLDS[name], steps, boxes, Path(workdir))
            held = statistics.mean(result["held"]) if result["held"] else float("nan")
            if mode == "inline":
                relax = statistics.mean(result["relax"]) if result["relax"] else float("nan")
                rows.append(["relax the buffer of one box (up to 55 L-BFGS steps)", relax,
                             relax / call])
            rows.append([f"MD held up per extraction, relax={mode!r}", held, held / call])
            notes.append(f"{name}, relax={mode!r}: boxes written: {result['boxes']}; {steps} MD "
                         f"steps {result['md']:.1f} s, {result['total']:.1f} s until every box "
                         "was written")
    return table(f"{name}: 96-atom slab, cubes of 10 A, threshold {THRESHOLDS[name]}",
                 ["step", "seconds", "in force calls"], rows), notes


def held_bonds(repeats: int) -> dict:
    """Border relaxation of a cube of 64 whole waters cut from 216, by EMT (cheap, so that the
    held bonds' own cost shows): no bond held (baseline), its buffer's O-H bonds held by ASE's
    FixBondLengths and by mdmonitor's HeldBonds; median seconds of `repeats`."""
    cube = cut_cube(water_box(0, molecules=216), 300, 3.1, n_atoms=64, molecules=True)
    bonds = relaxation.buffer_hydrogen_bonds(cube, hydrogen_partners(cube))

    def seconds(held, constraint) -> float:
        with mock.patch.object(relaxation, "HeldBonds", constraint):
            return median_time(lambda box: relaxation.relax_border(
                box.copy(), EMT(), bonds=bonds if held else ()), cube, repeats)

    free = seconds(False, relaxation.HeldBonds)
    rows = [["no bond held (baseline)", free, 1.0]]
    for name, constraint in (("ASE's FixBondLengths", FixBondLengths),
                             ("HeldBonds", relaxation.HeldBonds)):
        held = seconds(True, constraint)
        rows.append([f"{len(bonds)} O-H bonds held, {name}", held, held / free])
    return table(f"held bonds: relaxing a cube of 64 waters ({len(cube)} atoms) by EMT",
                 ["relaxation", "seconds", "x baseline"], rows)


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--uq", choices=("llpr", "committee"), nargs="+", default=None,
                        help="estimators to measure (default both, quick llpr)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.uq or (["llpr"] if args.quick else ["llpr", "committee"])
    steps, boxes, repeats = (10, 1, 5) if args.quick else (60, 3, 10)
    models = demo_models()
    estimators = {"llpr": lambda: LastLayerLPR.load(models["llpr"]),
                  "committee": lambda: Committee.from_mace(models["committee"])}
    tables, notes = [], []
    for name in names:
        result, more = measure(name, estimators[name](), steps, boxes, repeats)
        tables.append(result)
        notes += more
    tables.append(held_bonds(1 if args.quick else 3))
    notes += [f"{steps} MD steps per run, max_boxes={boxes}, a region not cut again for 10 "
              f"steps; baseline and cut: medians of {repeats} calls on rattled positions",
              "the worker process starts (torch and the models) when the first box is handed "
              "to it; its relaxations then run beside the MD on the other core",
              "torch on 1 thread"]
    report("Extraction cost", tables, notes, __file__, argv, args.json)


if __name__ == "__main__":
    main()
