"""`mdmonitor demo`: monitored MD of a hot Cu slab, outside the bulk-only training domain."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.build import fcc100
from ase.neighborlist import neighbor_list

from .committee import Committee
from .bundled_models import demo_models
from .llpr import LastLayerLPR
from .md import run_md
from .monitor import MonitoredCalculator

BULK_COORDINATION = 12
NEIGHBOUR_SHELL = 3.0  # A, between the first (2.55 A) and second (3.61 A) shells of Cu


def demo_slab():
    """Cu(100) slab, 4 x 4 x 6 layers (96 atoms), 8 A vacuum on each side, periodic cell."""
    return fcc100("Cu", size=(4, 4, 6), a=3.61, vacuum=8.0, periodic=True)


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


def run_demo(out: Path, uq: str = "committee", steps: int = 300, temperature_K: float = 600.0,
             cutoff: float = 4.0, threshold: float | None = None, progress: bool = True) -> dict:
    """Run the demo into directory `out`; returns a summary dictionary (also printed by the CLI)."""
    out.mkdir(parents=True, exist_ok=True)
    models = demo_models()
    estimator = (Committee.from_mace(models["committee"]) if uq == "committee"
                 else LastLayerLPR.load(models["llpr"]))
    atoms = demo_slab()
    log = out / "monitor.csv"
    log.unlink(missing_ok=True)
    triggered = []
    calc = MonitoredCalculator(estimator, cutoff=cutoff, threshold=threshold, log=log,
                               timestep=2.0 * units.fs,
                               callbacks=[lambda trigger: triggered.append(trigger.step)])
    run_md(atoms, calc, steps=steps, temperature_K=temperature_K, timestep_fs=2.0,
           trajectory=out / "trajectory.extxyz", frame_interval=10, progress=progress)
    frames = ase.io.read(out / "trajectory.extxyz", index=":")
    surface = np.concatenate([coordination(f) < BULK_COORDINATION for f in frames])
    local = np.concatenate([f.arrays["local_uncertainty"] for f in frames])
    final = frames[-1]
    order = np.argsort(-final.arrays["local_uncertainty"])[:5]
    final_coordination = coordination(final)
    plot_max_uncertainty(log, out / "max_uncertainty.png", threshold,
                         unit="eV/A" if uq == "committee" else "1/sqrt(LPR)")
    return {
        "estimator": uq, "atoms": len(atoms), "steps": steps, "temperature_K": temperature_K,
        "surface_mean": float(local[surface].mean()), "bulk_mean": float(local[~surface].mean()),
        "triggered_frames": len(triggered),
        "top_atoms": [(int(i), int(final_coordination[i]), float(final.positions[i, 2]),
                       float(final.arrays["local_uncertainty"][i])) for i in order],
        "files": [str(out / n) for n in ("monitor.csv", "trajectory.extxyz",
                                         "max_uncertainty.png")]}
