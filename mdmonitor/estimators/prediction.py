"""What an uncertainty estimator returns for one frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    """Energy, forces, stress and per-atom uncertainty of one frame.

    energy in eV, forces (N, 3) in eV/A, stress (6,) Voigt in eV/A^3 (None when the cell is not
    periodic in all directions), atomic_uncertainty (N,) in the estimator's unit (eV/A for a
    committee force spread), None when the estimator was asked to skip it
    (`predict(atoms, uncertainty=False)`). `extra` holds further results by their calculator
    name (e.g. "energies", "atomic_rigidity"), merged into `MonitoredCalculator.results`.
    """

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    atomic_uncertainty: np.ndarray | None
    extra: dict = field(default_factory=dict)


@dataclass
class MaceOutput:
    """One model's prediction for one frame (eV, eV/A, eV/A^3)."""

    energy: float
    atomic_energies: np.ndarray | None  # (N,) eV, including the isolated-atom energies E0
    forces: np.ndarray  # (N, 3) eV/A
    stress: np.ndarray | None  # (6,) Voigt, eV/A^3, only for fully periodic cells


def model_alone(model, atoms) -> Prediction:
    """A single-model estimator's prediction without its uncertainty: `model`'s (a MaceModel)
    energy, forces, stress and atomic energies ("energies") of `atoms`, checked finite, with
    atomic_uncertainty None; what it returns on the steps a monitor does not read."""
    _, output = model.run(atoms)
    return Prediction(energy=output.energy, forces=output.forces, stress=output.stress,
                      atomic_uncertainty=None, extra={"energies": output.atomic_energies})


def force_uncertainty(member_forces: np.ndarray) -> np.ndarray:
    """(M, N, 3) force sets (eV/A) -> (N,) s_j = 1/3 sum_k std_l(F^l_jk), unbiased (eV/A): the
    spread of a committee's members (seed 002 Eqs. 6-8), or of posterior samples."""
    return member_forces.std(axis=0, ddof=1).mean(axis=1)


def check_finite(name: str, what: str, value) -> None:
    """Raise FloatingPointError naming `what` came out non-finite from `name`."""
    array = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(array)):
        where = ""
        if array.ndim >= 1:
            where = f" (first at atom {int(np.argwhere(~np.isfinite(array))[0][0])})"
        raise FloatingPointError(f"{name} returned non-finite {what}{where}: NaN or inf")


def check_output(name: str, output) -> None:
    """check_finite on each of energy, forces, stress and atomic_energies that `output` has."""
    for what in ("energy", "forces", "stress", "atomic_energies"):
        value = getattr(output, what)
        if value is not None:
            check_finite(name, what, value)
