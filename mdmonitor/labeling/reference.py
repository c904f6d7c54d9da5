"""The reference calculation of a box: any ASE calculator, named as "module:Class" with keyword
arguments (DFT in practice; GFN2-xTB with tblite.ase:TBLite; EMT in the tests and the demo).

A `Reference` is the recipe, not the calculator: it is what travels to labeling workers, each of
which creates the calculator once and keeps it for every box it labels.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator


class ReferenceFailed(RuntimeError):
    """The reference calculator raised on a box."""


def reference_calculator(spec: str, parameters: dict | None = None) -> Calculator:
    """An ASE calculator from "module:Class" and keyword arguments, e.g. ase.calculators.emt:EMT."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"reference {spec!r} must be given as module:Class, "
                         "e.g. ase.calculators.emt:EMT")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module '{module_name}' of reference {spec!r}: "
                         f"{err}") from err
    factory = getattr(module, class_name, None)
    if factory is None:
        raise ValueError(f"module '{module_name}' has no '{class_name}' (reference {spec!r})")
    try:
        return factory(**(parameters or {}))
    except Exception as err:
        raise ValueError(f"cannot create reference {spec} with {parameters or {}}: {err}") from err


def parse_parameters(items) -> dict:
    """KEY=VALUE strings to keyword arguments; values are Python literals, or else strings."""
    parameters = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"reference parameter {item!r} must look like KEY=VALUE")
        try:
            parameters[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parameters[key] = value
    return parameters


_CALCULATORS: dict[str, Calculator] = {}  # this process's calculators, by recipe


@dataclass(frozen=True)
class Reference:
    """A reference calculator to create where it runs: "module:Class" and keyword arguments."""

    spec: str
    parameters: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec

    def check(self) -> None:
        """Create the calculator once here, so a wrong recipe fails before any box is sent."""
        reference_calculator(self.spec, self.parameters)

    def calculator(self) -> Calculator:
        """This process's calculator of the recipe, created on first use."""
        key = f"{self.spec} {sorted(self.parameters.items())!r}"
        if key not in _CALCULATORS:
            _CALCULATORS[key] = reference_calculator(self.spec, self.parameters)
        return _CALCULATORS[key]


def reference_labels(box: Atoms, calculator: Calculator, name: str, reference_name: str) -> Atoms:
    """`box` with the reference's energy (eV), forces (eV/A) and, for a periodic box, stress
    (eV/A^3) under REF_energy, REF_forces, REF_stress; ReferenceFailed if the calculator raises."""
    atoms = Atoms(box.numbers, box.positions, cell=box.cell, pbc=box.pbc)
    calculator.reset()  # (a calculator kept for many boxes, e.g. tblite's, would start its SCF
    atoms.calc = calculator  # from the previous box's wavefunction: labels would depend on it)
    try:
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress(voigt=True) if atoms.pbc.all() else None
    except Exception as err:
        raise ReferenceFailed(f"reference {reference_name} failed on box '{name}': "
                              f"{type(err).__name__}: {err}") from err
    labeled = box.copy()
    labeled.info.update(box=name, REF_energy=float(energy), labeled_with=reference_name,
                        config_type=f"mdmonitor-{box.info.get('strategy', 'box')}")
    if stress is not None:
        labeled.info["REF_stress"] = np.asarray(stress, dtype=float)
    labeled.arrays["REF_forces"] = np.asarray(forces, dtype=float)
    return labeled


def non_finite_labels(labeled: Atoms) -> list[str]:
    """The labels of `labeled` that hold a NaN or an infinity."""
    bad = [k for k in ("REF_energy", "REF_stress") if k in labeled.info
           and not np.all(np.isfinite(labeled.info[k]))]
    if not np.all(np.isfinite(labeled.arrays["REF_forces"])):
        bad.append("REF_forces")
    return bad
