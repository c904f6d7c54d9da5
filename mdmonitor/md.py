"""Running a monitored Langevin MD with ASE, writing frames with their uncertainties."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from tqdm.auto import tqdm

from .common.settings import (
    non_negative_integer,
    non_negative_number,
    positive_integer,
    positive_number,
)
from .monitor import MonitoredCalculator, UncertaintyLimitExceeded

FRAME_ARRAYS = ("atomic_uncertainty", "local_uncertainty")


def write_frame(path: Path, atoms, results: dict, step: int) -> None:
    """Append `atoms` with energy, forces and uncertainties to an extxyz trajectory."""
    frame = atoms.copy()
    frame.calc = None
    frame.info.update(step=step, energy=float(results["energy"]))
    frame.arrays["forces"] = np.asarray(results["forces"])
    for name in FRAME_ARRAYS:
        if name in results:
            frame.arrays[name] = np.asarray(results[name])
    ase.io.write(path, frame, format="extxyz", append=True)


def run_md(atoms, calc: MonitoredCalculator, steps: int, temperature_K: float,
           timestep_fs: float = 1.0, friction: float = 0.01, trajectory=None,
           frame_interval: int = 10, seed: int = 0, progress: bool = True):
    """Langevin NVT of `atoms` with `calc` for `steps` steps; velocities drawn at temperature_K.

    Frames (every `frame_interval` steps) go to `trajectory` (extxyz) when given. Returns None,
    or the `UncertaintyLimitExceeded` that stopped the run early. Settings are checked before
    anything runs (ValueError naming the setting): steps >= 0, temperature_K >= 0 (K),
    timestep_fs > 0, friction >= 0 (1/fs), frame_interval >= 1, seed >= 0.
    """
    steps = non_negative_integer("steps", steps)
    temperature_K = non_negative_number("temperature_K", temperature_K, meaning="temperature in K")
    timestep_fs = positive_number("timestep_fs", timestep_fs, meaning="time step in fs")
    friction = non_negative_number("friction", friction, meaning="friction in 1/fs")
    frame_interval = positive_integer("frame_interval", frame_interval)
    rng = np.random.default_rng(non_negative_integer("seed", seed))
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K,
                   friction=friction / units.fs, fixcm=False, rng=rng)
    bar = tqdm(total=steps, desc="MD", unit="step", disable=not progress)
    dyn.attach(lambda: bar.update(1) if dyn.nsteps else None)
    if trajectory is not None:
        trajectory = Path(trajectory)
        trajectory.unlink(missing_ok=True)
        dyn.attach(lambda: write_frame(trajectory, atoms, calc.results, dyn.nsteps),
                   interval=frame_interval)
    try:
        dyn.run(steps)
    except UncertaintyLimitExceeded as stop:
        if trajectory is not None:
            write_frame(trajectory, atoms, calc.results, dyn.nsteps)
        return stop
    finally:
        bar.close()
    return None
