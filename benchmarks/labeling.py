"""Labeling at scale: throughput of `Labeler` on Dask workers with a real quantum-chemistry
reference, and the labeler's own cost per box with a reference that costs nothing.

1. Throughput: periodic water boxes (27 molecules, 81 atoms) labeled with GFN2-xTB (tblite, one
   thread per worker) on a LocalCluster of 1 and of 2 worker processes; boxes per minute from
   the workers being ready to the last box filed (goal: >= 1.8x with 2 workers on 2 cores).
   The time of one GFN2-xTB call on such a box, measured in this process, is the baseline.
2. Overhead: small Cu boxes (32 atoms) labeled with a calculator that returns zeros at once,
   by 1 and by 4 labeler processes working one queue at once, each in its own process or
   with a LocalCluster of one worker: claim, transfer to the worker and back, dataset append,
   move to done/, per box of the queue (goal: < 50 ms, the same for 1 and 4 labelers).

    .venv/bin/python benchmarks/labeling.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, all_changes

from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.extraction.cutting import whole_frame_box
from mdmonitor.labeling.labeler import Labeler
from mdmonitor.labeling.reference import Reference
from results import benchmark_parser, report, table

XTB = Reference("tblite.ase:TBLite", {"method": "GFN2-xTB", "verbosity": 0})


class NoCost(Calculator):
    """A reference that costs nothing: zero energy, forces and stress."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "free_energy": 0.0, "forces": np.zeros((len(atoms), 3)),
                        "stress": np.zeros(6)}


def water_box(seed: int, molecules: int = 27) -> Atoms:
    """Water at ~1 g/cm3: molecules on a cubic grid, randomly turned and shifted (A)."""
    rng = np.random.default_rng(seed)
    per_side = round(molecules ** (1 / 3))
    length = (molecules * 18.015 / 0.6022) ** (1 / 3)  # A, at 1 g/cm3
    spacing = length / per_side
    box = Atoms(cell=[length] * 3, pbc=True)
    for i, j, k in np.ndindex(per_side, per_side, per_side):
        water = molecule("H2O")
        water.rotate(rng.uniform(0, 360), rng.normal(size=3))
        water.translate((np.array([i, j, k]) + 0.5) * spacing + rng.normal(scale=0.1, size=3))
        box += water
    return box


def queue_of(root: Path, frames: list[Atoms]) -> CandidateQueue:
    queue = CandidateQueue(root)
    for k, frame in enumerate(frames):
        queue.write(whole_frame_box(frame), f"bench_step{k:09d}_atom0000000_s00.extxyz")
    return queue


def throughput(workers: int, boxes: int, workdir: Path) -> float:
    """Boxes per minute of GFN2-xTB labeling on a LocalCluster of `workers` processes."""
    queue = queue_of(workdir / f"water-{workers}", [water_box(k) for k in range(boxes)])
    summary = Labeler(queue, XTB, workers=workers).run(progress=False)
    assert len(summary.labeled) == boxes, summary
    return 60 * boxes / summary.seconds


def overhead(labelers: int, workers: int | None, boxes: int, workdir: Path) -> float:
    """Seconds per box of the queue with `labelers` processes labeling it at once with NoCost."""
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    frames = []
    for k in range(boxes):
        frame = cu.copy()
        frame.rattle(0.05, seed=k)
        frames.append(frame)
    queue = queue_of(workdir / f"cu-{labelers}-{workers}", frames)
    command = [sys.executable, __file__, "--labeler", str(queue.root)]
    if workers:
        command += ["--workers", str(workers)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
                 for _ in range(labelers)]
    runs = [json.loads(p.communicate()[0].splitlines()[-1]) for p in processes]
    assert sum(run["labeled"] for run in runs) == boxes, runs
    span = max(run["ended"] for run in runs) - min(run["started"] for run in runs)
    return span / boxes


def label_as_one_of_many(queue: str, workers: int | None) -> None:
    """Label `queue` with NoCost; print when the workers were ready, the end, the boxes."""
    summary = Labeler(queue, NoCost(), workers=workers).run(progress=False)
    print(json.dumps({"started": summary.started, "ended": summary.ended,
                      "labeled": len(summary.labeled)}))


def xtb_call_seconds() -> float:
    from tblite.ase import TBLite

    atoms = water_box(100)
    atoms.calc = TBLite(**XTB.parameters)
    start = time.perf_counter()
    atoms.get_forces()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--labeler", metavar="QUEUE", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.labeler:
        label_as_one_of_many(args.labeler, args.workers)
        return
    water_boxes, cu_boxes = (4, 40) if args.quick else (12, 200)
    tables, notes = [], []
    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        try:
            call = xtb_call_seconds()
        except ImportError:
            notes.append("throughput not measured: tblite is not installed (pip install "
                         "'mdmonitor[xtb]')")
        else:
            rates = {n: throughput(n, water_boxes, workdir) for n in (1, 2)}
            tables.append(table(
                f"GFN2-xTB on {water_boxes} water boxes of 81 atoms (one call here: {call:.2f} s)",
                ["workers", "boxes per minute", "x 1 worker"],
                [[n, rate, rate / rates[1]] for n, rate in rates.items()]))
        rows = []
        for workers in (None, 1):
            single = overhead(1, workers, cu_boxes, workdir)
            for labelers in (1, 4):
                seconds = single if labelers == 1 else overhead(labelers, workers, cu_boxes,
                                                                workdir)
                rows.append([f"{labelers} labeler(s), " + (
                    "in their own process" if workers is None else "1 Dask worker each"),
                    1000 * seconds, seconds / single])
        tables.append(table(f"A reference that costs nothing, {cu_boxes} boxes of 32 atoms",
                            ["labelers", "ms per box", "x 1 labeler"], rows))
    notes += ["boxes per minute and ms per box are counted from the workers being ready "
              "(LocalCluster started, torch imported) to the last box filed",
              "the labeler writes a claim, the dataset append, the done/ file and a manifest "
              "line per box, each synced to disk",
              "workers: one thread each (OMP_NUM_THREADS=1)"]
    report("Labeling throughput and overhead", tables, notes, __file__, argv, args.json)


if __name__ == "__main__":
    main()
