"""Liquid water with a real quantum-chemistry reference, end to end, nothing downloaded.

    .venv/bin/python examples/water_xtb/run.py [--out examples/water_xtb/run] [--overwrite]

1. data: periodic boxes of 32 water molecules (randomly packed, density 0.95-1.05 g/cm3,
   Gaussian rattles of 0.02-0.08 A) labelled with GFN2-xTB (tblite): energy, forces, stress;
2. training: a committee of three tiny MACE models (seeds 0, 1, 2) trained from scratch by
   mace-torch's own `mace_run_train` on them, with GFN2-xTB's isolated-atom energies as E0s;
3. monitored MD: Langevin MD at 300 K of a new packing driven by the committee mean, first a
   probe run that measures the local uncertainty, then the same run (same seed, same
   trajectory) with a threshold just below the BOXES-th largest frame maximum of the probe and
   an Extractor cutting periodic cubes of whole water molecules into a queue (Heid et al. 2024);
4. labeling: `mdmonitor label QUEUE --reference tblite.ase:TBLite -p method=GFN2-xTB
   -p verbosity=0 --workers 2`;
5. what happened at each stage, and how long it took.

Every process runs one OpenMP/torch thread; parallelism comes from two processes (labeling,
training). The run directory holds data, models, logs, the queue and the labeled boxes.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

# one thread per process (set before tblite's OpenMP and torch start); see the docstring
os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
from ase import Atoms, units  # noqa: E402
from water import (  # noqa: E402
    isolated_atom_energies,
    train_water_model,
    water_box,
    xtb_labelled,
)

HERE = Path(__file__).resolve().parent
XTB = {"method": "GFN2-xTB", "verbosity": 0}  # the labeler's -p parameters
MEMBERS = (0, 1, 2)  # committee seeds
# friction (1/fs) strong enough to carry off the heat the packing releases as it relaxes (with
# 0.01/fs the run warmed to 550 K)
MD = {"temperature_K": 300.0, "timestep_fs": 0.5, "friction": 0.05, "seed": 7}
CUTOFF = 4.0  # A, aggregation radius of the local uncertainty
INTERVAL = 5  # monitor every INTERVAL MD steps
BOX = {"strategy": "cube", "core_radius": 3.0, "box_length": 8.0, "molecules": True,
       "cooldown": 50}


class Stopwatch:
    """Wall and CPU seconds of each stage; CPU of this process and of its child processes that
    have ended (mace_run_train, the xTB pool, `mdmonitor label` and its workers)."""

    def __init__(self):
        self.stages: dict[str, np.ndarray] = {}
        self._begin = self._last = self._now()

    @staticmethod
    def _now() -> np.ndarray:
        own, children = (resource.getrusage(who) for who in
                         (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
        return np.array([time.perf_counter(), cpu])

    def lap(self, stage: str) -> str:
        """End `stage` now; its times as text."""
        now = self._now()
        self.stages[stage], self._last = now - self._last, now
        return f"{self.stages[stage][0]:.0f} s wall, {self.stages[stage][1]:.0f} s CPU"

    def total(self) -> np.ndarray:
        """Wall and CPU seconds since the start."""
        return self._now() - self._begin


def make_data(out: Path, n_frames: int, n_molecules: int, seed: int, jobs: int) -> list[float]:
    """Write `n_frames` labelled packings, 5/6 to train.extxyz, 1/6 to valid.extxyz; returns
    the seconds of each GFN2-xTB call."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n_frames):
        atoms = water_box(n_molecules, rng.uniform(0.95, 1.05), rng)
        atoms.positions += rng.normal(scale=rng.uniform(0.02, 0.08), size=atoms.positions.shape)
        frames.append(atoms)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        labelled, seconds = zip(*pool.map(xtb_labelled, frames))
    for atoms in labelled:
        atoms.info["config_type"] = "packing"
    n_valid = max(2, n_frames // 6)
    ase.io.write(out / "train.extxyz", labelled[n_valid:], format="extxyz")
    ase.io.write(out / "valid.extxyz", labelled[:n_valid], format="extxyz")
    return list(seconds)


def train_member(out: Path, seed: int, e0s: dict[int, float], epochs: int) -> Path:
    """Train one committee member from scratch on out/train.extxyz with mace_run_train."""
    return train_water_model(out / "train.extxyz", out / "valid.extxyz",
                             out / "training" / f"member_{seed}", out / "models", seed, e0s,
                             epochs)


def member_errors(committee, frames: list[Atoms]) -> list[tuple[float, float]]:
    """RMSE of every member on labelled `frames`: energy (meV/atom) and force components
    (meV/A)."""
    energy, force = [], []
    for atoms in frames:
        outputs = committee.member_outputs(atoms)
        energy.append([(o.energy - atoms.info["REF_energy"]) / len(atoms) for o in outputs])
        force.append([np.sqrt(np.mean((o.forces - atoms.arrays["REF_forces"]) ** 2))
                      for o in outputs])
    energy_rmse, force_rmse = (1000 * np.sqrt(np.mean(np.square(errors), axis=0))
                               for errors in (energy, force))
    return list(zip(energy_rmse, force_rmse))


def monitored_md(committee, start: Atoms, steps: int, log: Path, threshold=None,
                 extractor=None) -> None:
    """Langevin MD of a copy of `start` driven by the committee mean, monitored every INTERVAL
    steps: the monitor log goes to `log`, every INTERVAL-th frame to `log` with suffix .extxyz."""
    from mdmonitor import MonitoredCalculator
    from mdmonitor.md import run_md

    calc = MonitoredCalculator(committee, cutoff=CUTOFF, threshold=threshold, interval=INTERVAL,
                               log=log, timestep=MD["timestep_fs"] * units.fs,
                               extractor=extractor)
    run_md(start.copy(), calc, steps, **MD, trajectory=log.with_suffix(".extxyz"),
           frame_interval=INTERVAL)


def threshold_for(maxima: list[float], boxes: int) -> float:
    """A local-uncertainty threshold (eV/A) crossed by the `boxes` largest of the monitored
    frames' `maxima`: midway between the boxes-th largest and the next."""
    maxima = sorted(maxima, reverse=True)
    if len(maxima) <= boxes:
        raise ValueError(f"{len(maxima)} monitored frames cannot give {boxes} boxes: run longer")
    return (maxima[boxes - 1] + maxima[boxes]) / 2


def label_queue(queue: Path, workers: int) -> None:
    """`mdmonitor label` with GFN2-xTB on `workers` processes."""
    command = [sys.executable, "-m", "mdmonitor.cli", "label", str(queue),
               "--reference", "tblite.ase:TBLite", "--workers", str(workers),
               *[arg for key, value in XTB.items() for arg in ("-p", f"{key}={value}")]]
    print("  $ mdmonitor", " ".join(command[3:]), flush=True)
    subprocess.run(command, check=True)


def box_report(committee, labeled: list[Atoms]) -> None:
    """Each labeled box: size, the uncertainty it was cut at, its GFN2-xTB energy and the
    committee's errors on it."""
    print(f"  {'box':44s} atoms  core  u_local (eV/A)  E_xTB (eV)  "
          "dE committee (meV/atom)  force MAE committee (meV/A)")
    for box in labeled:
        prediction = committee.predict(box)
        error = (prediction.energy - box.info["REF_energy"]) / len(box)
        mae = np.abs(prediction.forces - box.arrays["REF_forces"]).mean()
        print(f"  {box.info['box']:44s} {len(box):5d} {box.arrays['core_mask'].sum():5d} "
              f"{box.info['centre_local_uncertainty']:15.3f} {box.info['REF_energy']:11.2f} "
              f"{1000 * error:23.1f} {1000 * mae:28.0f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "run",
                        help="run directory (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing run directory first")
    parser.add_argument("--frames", type=int, default=18,
                        help="GFN2-xTB labelled packings (default: %(default)s)")
    parser.add_argument("--molecules", type=int, default=32,
                        help="water molecules per packing and in the MD (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=40,
                        help="training epochs per member (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=160,
                        help="MD steps of 0.5 fs (default: %(default)s)")
    parser.add_argument("--boxes", type=int, default=4,
                        help="boxes to cut: sets the threshold and max_boxes (default: "
                             "%(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes labeling and training at once (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the packings")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = args.out.resolve()
    if out.exists():
        if not args.overwrite:
            sys.exit(f"run directory '{out}' exists: give --overwrite or another --out")
        if any(out.iterdir()) and not (out / "train.extxyz").is_file():
            sys.exit(f"'{out}' is not a run directory of this example (no train.extxyz): not "
                     "deleting it; give another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    clock = Stopwatch()

    print(f"1. GFN2-xTB data: {args.frames} packings of {args.molecules} waters", flush=True)
    seconds = make_data(out, args.frames, args.molecules, args.seed, args.workers)
    e0s = isolated_atom_energies()
    train = ase.io.read(out / "train.extxyz", ":")
    valid = ase.io.read(out / "valid.extxyz", ":")
    print(f"  {len(train)} train + {len(valid)} valid frames of {len(train[0])} atoms; one "
          f"GFN2-xTB call {np.mean(seconds):.1f} s (range {min(seconds):.1f}-"
          f"{max(seconds):.1f} s); E0s (eV) {e0s}; {clock.lap('data')}", flush=True)

    print(f"2. training {len(MEMBERS)} MACE members, {args.epochs} epochs, {args.workers} at a "
          "time", flush=True)
    with ThreadPoolExecutor(args.workers) as pool:  # each member is a mace_run_train process
        models = list(pool.map(train_member, [out] * len(MEMBERS), MEMBERS,
                               [e0s] * len(MEMBERS), [args.epochs] * len(MEMBERS)))
    training = clock.lap("training")
    from mdmonitor import Committee, Extractor
    from mdmonitor.monitor_log import read_log

    committee = Committee.from_mace(models)
    print(f"  validation RMSE ({len(valid)} frames)   E (meV/atom)   F (meV/A)")
    for seed, (rmse_e, rmse_f) in zip(MEMBERS, member_errors(committee, valid)):
        print(f"    member seed {seed} {rmse_e:27.2f} {rmse_f:11.0f}")
    print(f"  {training}", flush=True)

    print(f"3. monitored MD: {args.steps} steps of {MD['timestep_fs']} fs at "
          f"{MD['temperature_K']:.0f} K", flush=True)
    start = water_box(args.molecules, 1.0, np.random.default_rng(args.seed + 1000))
    monitored_md(committee, start, args.steps, out / "probe.csv")
    maxima = [row["max_local_uncertainty"] for row in read_log(out / "probe.csv")]
    threshold = threshold_for(maxima, args.boxes)
    print(f"  probe run ({clock.lap('MD probe')}): largest local uncertainty of a frame "
          f"{min(maxima):.3f}-{max(maxima):.3f} eV/A; threshold {threshold:.3f} eV/A, crossed "
          f"by the {args.boxes} most uncertain of its {len(maxima)} monitored frames", flush=True)
    queue = out / "candidates"
    with Extractor(queue=queue, max_boxes=args.boxes, run_id="water", **BOX) as extractor:
        monitored_md(committee, start, args.steps, out / "monitor.csv", threshold, extractor)
    pending = sorted((queue / "pending").glob("*.extxyz"))
    failed = sorted((queue / "failed").glob("*.extxyz"))
    print(f"  run with extraction ({clock.lap('MD with extraction')}): {len(pending)} boxes "
          f"queued, {len(failed)} failed a quality gate; MD held up "
          f"{sum(extractor.blocking_seconds):.0f} s by cutting and relaxing them", flush=True)

    print("4. labeling the queue with GFN2-xTB", flush=True)
    label_queue(queue, args.workers)
    labeling = clock.lap("labeling")
    dataset = queue / "labeled.extxyz"
    box_report(committee, ase.io.read(dataset, ":") if dataset.is_file() else [])
    print(f"  {labeling}")

    print("5. time per stage (wall, and CPU of this process and its finished children):")
    for stage, (wall, cpu) in clock.stages.items():
        print(f"  {stage:20s} {wall:6.0f} s wall {cpu:6.0f} s CPU")
    wall, cpu = clock.total()
    print(f"  {'total':20s} {wall:6.0f} s wall {cpu:6.0f} s CPU; everything is in {out}")


if __name__ == "__main__":
    main()
