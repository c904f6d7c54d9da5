"""Committee (ensemble) uncertainty: the spread of several models' predictions.

Heid et al. 2024 (seed 002), Eqs. 4-8: the dynamics follows the committee mean; the per-atom
force uncertainty is the unbiased standard deviation over members of each Cartesian force
component, averaged over x, y, z.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import PropertyNotImplementedError

from .mace_model import MaceModel, MaceOutput
from .prediction import Prediction, check_output


def force_uncertainty(member_forces: np.ndarray) -> np.ndarray:
    """(M, N, 3) member forces (eV/A) -> (N,) s_j = 1/3 sum_k std_l(F^l_jk), unbiased (eV/A)."""
    return member_forces.std(axis=0, ddof=1).mean(axis=1)


class Committee:
    """Uncertainty from a committee of models: any ASE calculators, or MACE files sharing a graph.

    `Committee([calc_a, calc_b, ...])` takes calculators; `Committee.from_mace(paths)` loads MACE
    model files that must agree on elements and cutoff. `predict(atoms)` returns the committee
    mean energy, forces and stress, atomic_uncertainty = force spread (eV/A), and in `extra`:
    "energies" (mean atomic energies, eV), "atomic_energy_uncertainty" (their spread, eV),
    "energy_uncertainty" (spread of the total energy, eV) and per-member values
    "energy_contributions", "forces_contributions".
    """

    def __init__(self, calculators=None, *, models: list[MaceModel] | None = None):
        if (calculators is None) == (models is None):
            raise ValueError("give either ASE calculators or MACE models, not both")
        members = list(calculators if models is None else models)
        if len(members) < 2:
            raise ValueError(f"a committee needs at least two members, got {len(members)}")
        for other in (models or [])[1:]:
            models[0].check_compatible(other)
        if calculators is not None:
            check_same_setup(members)
        self.calculators = None if calculators is None else members
        self.models = models
        self.names = ([m.name for m in models] if models is not None
                      else [f"member {i} ({type(c).__name__})" for i, c in enumerate(members)])

    @classmethod
    def from_mace(cls, paths, device: str = "cpu", head: str | None = None) -> "Committee":
        """Committee of MACE model files (paths)."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        return cls(models=[MaceModel(p, device=device, head=head) for p in paths])

    def __len__(self) -> int:
        return len(self.names)

    def member_outputs(self, atoms) -> list[MaceOutput]:
        """Every member's prediction of `atoms`, checked for NaN/inf."""
        if self.models is not None:
            graph = self.models[0].graph(atoms)
            outputs = [model.predict(atoms, graph) for model in self.models]
        else:
            outputs = [calculator_output(calc, atoms) for calc in self.calculators]
        for name, output in zip(self.names, outputs):
            check_output(name, output)
        return outputs

    def predict(self, atoms) -> Prediction:
        outputs = self.member_outputs(atoms)
        energies = np.array([o.energy for o in outputs])
        forces = np.stack([o.forces for o in outputs])
        stresses = [o.stress for o in outputs]
        extra = {"energy_uncertainty": float(energies.std(ddof=1)),
                 "energy_contributions": energies, "forces_contributions": forces}
        if all(o.atomic_energies is not None for o in outputs):
            atomic = np.stack([o.atomic_energies for o in outputs])
            extra["energies"] = atomic.mean(axis=0)
            extra["atomic_energy_uncertainty"] = atomic.std(axis=0, ddof=1)
        return Prediction(
            energy=float(energies.mean()), forces=forces.mean(axis=0),
            stress=None if any(s is None for s in stresses) else np.mean(stresses, axis=0),
            atomic_uncertainty=force_uncertainty(forces), extra=extra)


def check_same_setup(calculators) -> None:
    """Refuse MACE calculators (or any with `r_max` and `z_table`) that disagree on the cutoff
    or the elements."""
    for attribute, describe in (("r_max", lambda c: float(c.r_max)),
                                ("z_table", lambda c: sorted(int(z) for z in c.z_table.zs))):
        if all(hasattr(c, attribute) for c in calculators):
            values = [describe(c) for c in calculators]
            if any(v != values[0] for v in values):
                raise ValueError(f"committee members disagree on {attribute}: {values}")


def calculator_output(calc, atoms) -> MaceOutput:
    """Energy, forces, and where implemented stress and atomic energies from an ASE calculator."""
    frame = atoms.copy()
    frame.calc = calc
    stress = atomic = None
    if atoms.pbc.all():
        try:
            stress = frame.get_stress()
        except PropertyNotImplementedError:
            pass
    if "energies" in getattr(calc, "implemented_properties", ()):
        atomic = frame.get_potential_energies()
    return MaceOutput(energy=frame.get_potential_energy(), atomic_energies=atomic,
                      forces=frame.get_forces(), stress=stress)
