"""Extraction cost on the demo system: how long the MD is held up per box, inline vs worker.

Runs monitored Langevin MD of the 96-atom demo slab (600 K) with an Extractor cutting periodic
cubes (10 A, core radius 4 A) around atoms above the threshold, once with the border relaxed
inline (in the force call) and once in a background worker process. Prints, per mode, the MD
force-call time without extraction (the baseline, same run), the time the MD was held up per
extraction, the relaxation time per box, and the wall time of the run.

    .venv/bin/python benchmarks/extraction.py [--uq llpr|committee] [--steps 60] [--boxes 3] [--threshold U]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import mdmonitor  # noqa: F401  (sets the e3nn/torch load flag before MACE is imported)
import ase.io
from ase import units

from mdmonitor import Committee, Extractor, LastLayerLPR, MonitoredCalculator, demo_models
from mdmonitor.demo import DEMO_THRESHOLDS, demo_slab
from mdmonitor.md import run_md


def run(mode: str, estimator, threshold: float, steps: int, boxes: int, workdir: Path) -> dict:
    extractor = Extractor("cube", queue=workdir / mode, core_radius=4.0, box_length=10.0,
                          relax=mode, max_boxes=boxes, cooldown=10)
    calc = MonitoredCalculator(estimator, cutoff=4.0, threshold=threshold,
                               timestep=2.0 * units.fs, extractor=extractor)
    atoms = demo_slab()
    start = time.perf_counter()
    run_md(atoms, calc, steps=steps, temperature_K=600.0, timestep_fs=2.0, progress=False,
           trajectory=None)
    md_seconds = time.perf_counter() - start
    extractor.close()
    total = time.perf_counter() - start
    held = extractor.blocking_seconds
    relax = [ase.io.read(p).info.get("relax_seconds", float("nan"))
             for p in extractor.queue.boxes("pending")]
    return {"boxes": len(relax), "held": held, "relax": relax, "md": md_seconds, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uq", choices=("llpr", "committee"), default="llpr")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--boxes", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=None,
                        help="local uncertainty that triggers a cut (default: the demo's)")
    args = parser.parse_args()
    models = demo_models()
    estimator = (LastLayerLPR.load(models["llpr"]) if args.uq == "llpr"
                 else Committee.from_mace(models["committee"]))
    atoms = demo_slab()
    atoms.calc = MonitoredCalculator(estimator, cutoff=4.0)
    atoms.get_forces()
    begin = time.perf_counter()
    for _ in range(5):
        atoms.rattle(0.01)
        atoms.get_forces()
    step = (time.perf_counter() - begin) / 5
    print(f"{args.uq} monitor, 96-atom slab, cubes of 10 A: one monitored force call "
          f"{step * 1e3:.0f} ms (baseline)")
    with tempfile.TemporaryDirectory() as workdir:
        for mode in ("inline", "worker"):
            result = run(mode, estimator, args.threshold or DEMO_THRESHOLDS[args.uq], args.steps,
                         args.boxes, Path(workdir))
            held = statistics.mean(result["held"]) if result["held"] else float("nan")
            relax = statistics.mean(result["relax"]) if result["relax"] else float("nan")
            print(f"{mode:>7}: {result['boxes']} boxes, relaxation {relax:.2f} s per box; MD "
                  f"held up {held:.3f} s per extraction ({held / step:.1f} force calls); "
                  f"{args.steps} MD steps {result['md']:.1f} s, {result['total']:.1f} s until "
                  "every box was written")


if __name__ == "__main__":
    main()
