"""`mdmonitor demo`: monitored MD of a hot Cu slab, outside the bulk-only training domain.

The whole chain: MD with the monitor, boxes cut around the most uncertain atoms, their borders
relaxed, labeled by EMT (standing in for DFT), and the model's real error on each box's core
set beside the uncertainty that chose it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.build import fcc100
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list

from .bundled_models import demo_models
from .estimators.committee import Committee
from .estimators.fitted import load_fitted
from .extraction.extractor import Extractor, relaxation_model
from .labeling.labeler import Labeler
from .md import run_md
from .monitor import MonitoredCalculator
from .quality.calibration import uncertainty_unit

BULK_COORDINATION = 12
NEIGHBOUR_SHELL = 3.0  # A, between the first (2.55 A) and second (3.61 A) shells of Cu
# local uncertainty above which the demo cuts boxes: eV/A for the committee, 1/sqrt(LPR) for
# LLPR, expected force error (eV/A) for LTAU, nats for the GMM; each is crossed by 1-3 % of the
# atoms of EMT slab frames at 600 K (scripts/cu_emt_study.py)
DEMO_THRESHOLDS = {"committee": 0.04, "llpr": 0.05, "ltau": 0.1, "gmm": 140.0}
MAX_BOXES = 4


def demo_slab(lattice_constant: float = 3.61):
    """Cu(100) slab, 4 x 4 x 6 layers (96 atoms), 8 A vacuum on each side, periodic cell."""
    slab = fcc100("Cu", size=(4, 4, 6), a=lattice_constant, vacuum=8.0, periodic=True)
    slab.info.clear()  # ASE's adsorbate-site table, which extxyz cannot store
    return slab


def coordination(atoms) -> np.ndarray:
    """Number of neighbours of each atom within NEIGHBOUR_SHELL."""
    return np.bincount(neighbor_list("i", atoms, NEIGHBOUR_SHELL), minlength=len(atoms))


def plot_max_uncertainty(log_path: Path, png_path: Path, threshold: float | None,
                         unit: str) -> None:
    """PNG of the frame maximum (and mean) local uncertainty against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = np.genfromtxt(log_path, delimiter=",", names=True)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(table["time_fs"], table["max_local_uncertainty"], label="max over atoms")
    ax.plot(table["time_fs"], table["mean_local_uncertainty"], label="mean over atoms")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label="threshold")
    ax.set_xlabel("time (fs)")
    ax.set_ylabel(f"local uncertainty ({unit})")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def core_force_errors(queue_dir: Path, estimator) -> list[tuple]:
    """For each labeled box: (name, source step, centre, its local uncertainty, the model's force
    error on the core atoms: mean absolute x/y/z deviation from the labels, eV/A)."""
    model = relaxation_model(estimator)
    rows = []
    for path in sorted((queue_dir / "done").glob("*.extxyz")):
        box = ase.io.read(path)
        core = box.arrays["core_mask"]
        error = np.abs(model.predict(box).forces - box.arrays["REF_forces"])[core].mean()
        rows.append((path.name, int(box.info["source_step"]), int(box.info["centre_index"]),
                     float(box.info["centre_local_uncertainty"]), float(error)))
    return rows


def run_demo(out: Path, uq: str = "committee", steps: int = 300, temperature_K: float = 600.0,
             cutoff: float = 4.0, threshold: float | None = None, progress: bool = True) -> dict:
    """Run the demo into directory `out`; returns a summary dictionary (also printed by the CLI).

    Boxes (periodic cubes of 10 A, core radius 4 A, at most MAX_BOXES) are cut around atoms
    above `threshold` (default DEMO_THRESHOLDS), their borders relaxed in a background process
    (relax="worker": relaxed inline, each held the MD, and its progress bar, up for 40-100 s on
    a busy machine) and labeled with EMT. Runs torch on the caller's threads, which it leaves
    alone: `mdmonitor demo` runs on one (`mdmonitor --threads N`): the models and boxes are
    tiny, and with a busy second core two threads made the demo 4x slower (measured).
    """
    out.mkdir(parents=True, exist_ok=True)
    models = demo_models()
    estimator = (Committee.from_mace(models["committee"]) if uq == "committee"
                 else load_fitted(uq, models[uq]))
    threshold = DEMO_THRESHOLDS[uq] if threshold is None else threshold
    atoms = demo_slab()
    log = out / "monitor.csv"
    log.unlink(missing_ok=True)
    queue_dir = out / "candidates"
    shutil.rmtree(queue_dir, ignore_errors=True)
    extractor = Extractor("cube", queue=queue_dir, core_radius=4.0, box_length=10.0,
                          max_boxes=MAX_BOXES, cooldown=100, relax="worker")
    triggered = []
    calc = MonitoredCalculator(estimator, cutoff=cutoff, threshold=threshold, log=log,
                               timestep=2.0 * units.fs, extractor=extractor,
                               callbacks=[lambda trigger: triggered.append(trigger.step)])
    with extractor:  # (on leaving: wait for the worker's last relaxations)
        run_md(atoms, calc, steps=steps, temperature_K=temperature_K, timestep_fs=2.0,
               trajectory=out / "trajectory.extxyz", frame_interval=10, progress=progress)
        if progress and extractor.boxes_written:
            print(f"MD done; waiting for the background process to finish relaxing the "
                  f"borders of the {extractor.boxes_written} boxes cut", flush=True)
    labeling = Labeler(queue_dir, EMT(), reference_name="EMT").run(progress=progress)
    frames = ase.io.read(out / "trajectory.extxyz", index=":")
    surface = np.concatenate([coordination(f) < BULK_COORDINATION for f in frames])
    local = np.concatenate([f.arrays["local_uncertainty"] for f in frames])
    final = frames[-1]
    order = np.argsort(-final.arrays["local_uncertainty"])[:5]
    final_coordination = coordination(final)
    unit = uncertainty_unit(estimator)
    plot_max_uncertainty(log, out / "max_uncertainty.png", threshold, unit=unit)
    return {
        "estimator": uq, "unit": unit, "atoms": len(atoms), "steps": steps,
        "temperature_K": temperature_K,
        "surface_mean": float(local[surface].mean()), "bulk_mean": float(local[~surface].mean()),
        "threshold": threshold, "triggered_frames": len(triggered),
        "boxes": core_force_errors(queue_dir, estimator), "failed_boxes": labeling.failed,
        "blocking_s": extractor.blocking_seconds,
        "top_atoms": [(int(i), int(final_coordination[i]), float(final.positions[i, 2]),
                       float(final.arrays["local_uncertainty"][i])) for i in order],
        "files": [str(out / n) for n in ("monitor.csv", "trajectory.extxyz",
                                         "max_uncertainty.png", "candidates/labeled.extxyz")]}
