"""Periodic boxes of water and their xTB labels, shared by the water examples and the Heid study.

    water_box(n_molecules, density, rng)   randomly packed waters in a periodic cube
    xtb_labelled(atoms, method)            a copy with REF_energy / REF_forces / REF_stress
    isolated_atom_energies(method)         the E0s of H and O (eV)
    train_water_model(...)                 a tiny MACE model trained from scratch on them
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import molecule
from scipy.spatial.transform import Rotation

WATER_MASS = 18.015  # g/mol
AVOGADRO = 6.02214076e23  # 1/mol
MIN_DISTANCE = 1.8  # A, closest approach of atoms of two different molecules in a packing
MACE_SETTINGS = {  # mace_run_train's; tiny, as the bundled Cu models (scripts/train_demo_models.py)
    "model": "ScaleShiftMACE", "r_max": 4.0, "num_channels": 16, "max_L": 1, "max_ell": 2,
    "correlation": 2, "num_interactions": 2, "MLP_irreps": "16x0e", "num_radial_basis": 8,
    "radial_MLP": "[16, 16]", "loss": "stress", "energy_weight": 10.0, "forces_weight": 100.0,
    "stress_weight": 10.0, "batch_size": 2, "valid_batch_size": 4, "lr": 0.01,
    "ema_decay": 0.99, "energy_key": "REF_energy", "forces_key": "REF_forces",
    "stress_key": "REF_stress", "compute_stress": True, "default_dtype": "float64",
    "device": "cpu", "plot": False}


def cube_length(n_molecules: int, density: float) -> float:
    """Edge (A) of a cube holding `n_molecules` waters at `density` (g/cm3)."""
    return (n_molecules * WATER_MASS / AVOGADRO / density * 1e24) ** (1 / 3)


def closest_approach(positions: np.ndarray, others: np.ndarray, length: float) -> float:
    """Smallest minimum-image distance (A) between `positions` and `others` in a periodic cube
    of edge `length` (A); inf without others. (ase.geometry.get_distances, for any cell, made
    packing 24 waters at 1.25 g/cm3 3x slower: 5.4 s against 1.7 s.)"""
    if len(others) == 0:
        return np.inf
    d = positions[:, None, :] - others[None, :, :]
    d -= length * np.round(d / length)
    return float(np.sqrt((d * d).sum(axis=2).min()))


def water_box(n_molecules: int, density: float, rng: np.random.Generator,
              min_distance: float = MIN_DISTANCE) -> Atoms:
    """`n_molecules` randomly placed and oriented waters in a periodic cube of `density` (g/cm3),
    no two atoms of different molecules closer than `min_distance` (A)."""
    length = cube_length(n_molecules, density)
    template = molecule("H2O")
    template.positions -= template.positions[0]  # the oxygen at the origin
    box = Atoms(cell=[length] * 3, pbc=True)
    for _ in range(10000 * n_molecules):
        if len(box) == 3 * n_molecules:
            box.wrap()
            return box
        water = template.copy()
        water.positions = Rotation.random(random_state=rng.integers(2**31)).apply(
            water.positions) + rng.uniform(0, length, 3)
        if closest_approach(water.positions, box.positions, length) >= min_distance:
            box += water
    raise RuntimeError(f"could not pack {n_molecules} waters at {density} g/cm3")


def xtb_labelled(atoms: Atoms, method: str = "GFN2-xTB") -> tuple[Atoms, float]:
    """A copy of `atoms` with `method`'s labels under REF_energy (eV), REF_forces (eV/A) and
    REF_stress (eV/A^3), and the seconds the calculation took."""
    from tblite.ase import TBLite

    start = time.perf_counter()
    atoms = atoms.copy()
    atoms.calc = TBLite(method=method, verbosity=0)
    atoms.info.update(REF_energy=atoms.get_potential_energy(),
                      REF_stress=atoms.get_stress(voigt=True))
    atoms.arrays["REF_forces"] = atoms.get_forces()
    atoms.calc = None
    return atoms, time.perf_counter() - start


def isolated_atom_energies(method: str = "GFN2-xTB") -> dict[int, float]:
    """`method`'s energies (eV) of isolated H and O atoms, the models' E0s."""
    from tblite.ase import TBLite

    energies = {}
    for symbol in ("H", "O"):
        atom = Atoms(symbol)
        atom.calc = TBLite(method=method, verbosity=0)
        energies[int(atom.numbers[0])] = float(atom.get_potential_energy())
    return energies


def train_water_model(train_file: Path, valid_file: Path, work_dir: Path, models: Path,
                      seed: int, e0s: dict[int, float], epochs: int, **settings) -> Path:
    """Train a tiny MACE model from scratch with mace_run_train (MACE_SETTINGS, updated by
    `settings`) in `work_dir`; returns its copy in the directory `models`."""
    from mdmonitor.learn.training import run_mace_train

    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    name = f"water_{seed}"
    argv = [f"--{key}={value}" for key, value in {**MACE_SETTINGS, **settings}.items()] + [
        f"--name={name}", f"--seed={seed}", f"--work_dir={work_dir}", f"--E0s={e0s}",
        f"--train_file={train_file}", f"--valid_file={valid_file}",
        f"--max_num_epochs={epochs}", "--ema", "--pair_repulsion", "--save_cpu"]
    run_mace_train(argv, work_dir / "train.log", f"water model {seed}")
    model = models / f"{name}.model"
    models.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work_dir / f"{name}.model", model)
    return model
