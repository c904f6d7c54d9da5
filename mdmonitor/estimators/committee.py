"""Committee (ensemble) uncertainty: the spread of several models' predictions.

Heid et al. 2024 (seed 002), Eqs. 4-8: the dynamics follows the committee mean; the per-atom
force uncertainty is the unbiased standard deviation over members of each Cartesian force
component, averaged over x, y, z. With a driver, the dynamics follows one model instead (a
member, or a separate production model) on every step, and the other members are evaluated only
when the uncertainty is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase.calculators.calculator import PropertyNotImplementedError

from .prediction import MaceOutput, Prediction, check_output, force_uncertainty

if TYPE_CHECKING:  # (imported where a model is loaded: a committee of ASE calculators, and a
    from .mace_model import MaceModel  # program reading a calibration, start without torch)


class Committee:
    """Uncertainty from a committee of models: any ASE calculators, or MACE files sharing a graph.

    `Committee([calc_a, calc_b, ...])` takes calculators; `Committee.from_mace(paths)` loads MACE
    model files that must agree on elements and cutoff. `predict(atoms)` returns the energy,
    forces and stress that drive the dynamics, atomic_uncertainty = force spread (eV/A), and in
    `extra`: "energies" (atomic energies of the dynamics, eV), "atomic_energy_uncertainty"
    (their spread, eV), "energy_uncertainty" (spread of the total energy, eV) and per-member
    values "energy_contributions", "forces_contributions".

    driver: what drives the dynamics. None (default): the committee mean (Eq. 4), which needs
    every member on every step. A member index (int): that member's own energy, forces and
    stress; a MACE model (file or `MaceModel`, with `models` only): a separate production model,
    which must know the same elements and cutoff. With a driver, `predict(atoms,
    uncertainty=False)` evaluates the driver alone (atomic_uncertainty None), and with the
    uncertainty the spread of the members is exactly that of the same committee without a
    driver.
    """

    def __init__(self, calculators=None, *, models: list[MaceModel] | None = None, driver=None):
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
        self.driver = self._checked_driver(driver)

    def _checked_driver(self, driver):
        """None, a member index in range, or a separate MaceModel agreeing with the members."""
        if driver is None:
            return None
        if isinstance(driver, (int, np.integer)) and not isinstance(driver, bool):
            if not 0 <= driver < len(self.names):
                raise ValueError(f"driver member {driver} is not in this committee of "
                                 f"{len(self.names)} (members 0 to {len(self.names) - 1})")
            return int(driver)
        if self.models is None:
            raise ValueError("a committee of ASE calculators is driven by a member (driver=0, "
                             f"1, ...), not by {driver!r}")
        from .mace_model import MaceModel

        if isinstance(driver, (str, Path)):
            driver = MaceModel(driver, device=self.models[0].device, head=self.models[0].head)
        if not isinstance(driver, MaceModel):
            raise TypeError(f"driver must be a member index, a MACE model file or a MaceModel, "
                            f"not {type(driver).__name__}")
        self.models[0].check_compatible(driver, "the committee and its driving model")
        return driver

    @classmethod
    def from_mace(cls, paths, device: str = "cpu", head: str | None = None,
                  driver=None) -> "Committee":
        """Committee of MACE model files (paths); driver: None (the mean), a member index or
        a MACE model file that drives the dynamics."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        from .mace_model import MaceModel

        return cls(models=[MaceModel(p, device=device, head=head) for p in paths], driver=driver)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def driven_by(self) -> str:
        """What drives the dynamics, in words."""
        if self.driver is None:
            return "the committee mean"
        if isinstance(self.driver, int):
            return f"member {self.driver} ('{self.names[self.driver]}')"
        return f"model '{self.driver.name}'"

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

    def driver_output(self, atoms) -> MaceOutput:
        """The driver's prediction of `atoms` alone, checked for NaN/inf."""
        if not isinstance(self.driver, int):  # (a separate MaceModel)
            name, output = f"driving model '{self.driver.name}'", self.driver.predict(atoms)
        elif self.models is not None:
            name, output = self.names[self.driver], self.models[self.driver].predict(atoms)
        else:
            name = self.names[self.driver]
            output = calculator_output(self.calculators[self.driver], atoms)
        check_output(name, output)
        return output

    def predict(self, atoms, uncertainty: bool = True) -> Prediction:
        """Energy, forces, stress of the dynamics and the members' spread (see the class).

        uncertainty=False: with a driver, only the driver is evaluated and atomic_uncertainty
        is None; a committee driven by its mean evaluates every member anyway and returns all.
        """
        if self.driver is not None and not uncertainty:
            return driven(self.driver_output(atoms), None, {})
        outputs = self.member_outputs(atoms)
        energies = np.array([o.energy for o in outputs])
        forces = np.stack([o.forces for o in outputs])
        extra = {"energy_uncertainty": float(energies.std(ddof=1)),
                 "energy_contributions": energies, "forces_contributions": forces}
        if all(o.atomic_energies is not None for o in outputs):
            atomic = np.stack([o.atomic_energies for o in outputs])
            extra["energies"] = atomic.mean(axis=0)
            extra["atomic_energy_uncertainty"] = atomic.std(axis=0, ddof=1)
        spread = force_uncertainty(forces)
        if self.driver is not None:
            driver = (outputs[self.driver] if isinstance(self.driver, int)
                      else self.driver_output(atoms))
            return driven(driver, spread, extra)
        stresses = [o.stress for o in outputs]
        return Prediction(
            energy=float(energies.mean()), forces=forces.mean(axis=0),
            stress=None if any(s is None for s in stresses) else np.mean(stresses, axis=0),
            atomic_uncertainty=spread, extra=extra)


def driven(driver: MaceOutput, atomic_uncertainty, extra: dict) -> Prediction:
    """The driver's energy, forces, stress and atomic energies with the committee's spread."""
    extra = {key: value for key, value in extra.items() if key != "energies"}
    if driver.atomic_energies is not None:
        extra["energies"] = driver.atomic_energies
    return Prediction(energy=driver.energy, forces=driver.forces, stress=driver.stress,
                      atomic_uncertainty=atomic_uncertainty, extra=extra)


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
