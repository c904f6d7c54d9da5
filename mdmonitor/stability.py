"""Is the MD still physical? Close contacts, broken bonds, a kinetic-energy blow-up, NaN.

The criteria of Tan et al. 2023 (seed 004, Sec. 2.5: atoms closer than a minimum distance,
bonds stretched beyond a maximum, kinetic energy out of bounds or null) in a form that needs no
per-system tuning: distances relative to the sum of covalent radii (`ase.data.covalent_radii`),
the temperature relative to the run's own. Chong et al. 2024 (seed 000, App. C, Fig. 9) found
the local prediction rigidity low on the atoms in close contact before the energy blew up: these
checks say when that happened, so that the uncertainty can be judged by how much earlier it rose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.geometry import find_mic

from .common.geometry import BOND_FACTOR, close_pairs
from .common.settings import positive_number


@dataclass(frozen=True)
class Finding:
    """One violated criterion: a short `code` (close-contact, bond-broken, hot, non-finite), a
    sentence for people (`detail`) and the atoms involved (`indices`, sorted)."""

    code: str
    detail: str
    indices: np.ndarray


class Instability(RuntimeError):
    """The MD left physical ground at `step` (force call): `codes` of the violated criteria,
    `indices` of the atoms involved, `atoms` a copy of the frame (None when its positions are
    not finite), `time_fs` (None without a time step). Raised from the force call after the
    frame is logged (with `stop_on_instability`, and always for NaN or inf), and handed
    unraised to `on_instability`.
    """

    def __init__(self, step: int, findings: list[Finding], atoms: Atoms | None = None,
                 time_fs: float | None = None):
        self.step, self.findings, self.atoms, self.time_fs = step, findings, atoms, time_fs
        self.codes = tuple(f.code for f in findings)
        self.indices = np.unique(np.concatenate([f.indices for f in findings])).astype(int)
        super().__init__(f"unstable MD at step {step}: " + "; ".join(f.detail for f in findings))


def close_contacts(atoms: Atoms, factor: float) -> tuple[np.ndarray, float]:
    """(atoms closer than `factor` x (r_i + r_j) to another atom or periodic image, with r the
    covalent radii; their closest distance in A, inf when there is none). The structure checks
    refuse atoms closer than OVERLAP_FACTOR (0.1) x so, with the same search."""
    i, j, d = close_pairs(atoms, factor)
    return np.unique(np.concatenate([i, j])), float(d.min()) if len(d) else float("inf")


def _above_one(name: str, value, meaning: str, allow_none: bool = False) -> float | None:
    """`value` as a float above 1 (or None when allowed), else ValueError naming `name`."""
    if positive_number(name, value, allow_none) is not None and value <= 1:
        raise ValueError(f"{name} must be above 1 ({meaning}), got {value!r}")
    return None if value is None else float(value)


class StabilityCriteria:
    """The checks `MonitoredCalculator` runs on every monitored frame; each can be turned off
    with None.

    contact_factor: two atoms (or an atom and a periodic image) closer than this fraction of
        the sum of their covalent radii are in close contact (0.5: 1.32 A for Cu-Cu, 0.49 A
        for O-H; the default of the extraction's close-contact gate).
    temperature_factor: the kinetic energy has blown up when the temperature exceeds this
        factor times `temperature_K` (K, the target of the thermostat), or when that is not
        given, times the temperature of the first frame checked; frames without velocities and
        runs that start at 0 K without `temperature_K` are not checked.
    bonds: "start" (every pair closer than 1.2 x the sum of covalent radii in the first frame,
        for molecular systems), or (M, 2) atom indices; a bond is broken when its length
        (minimum image) exceeds `bond_stretch` times its length in the first frame.
    Positions, momenta, energy and forces that are not finite are always an instability.
    The first frame checked is the start the bonds and temperature are measured against: use
    one StabilityCriteria per run.
    """

    def __init__(self, contact_factor: float | None = 0.5, temperature_factor: float | None = 10.0,
                 temperature_K: float | None = None, bonds=None, bond_stretch: float = 1.5):
        if positive_number("contact_factor", contact_factor, allow_none=True,
                           meaning="fraction") is not None and contact_factor >= 1:
            raise ValueError(f"contact_factor must be below 1 (a fraction of the sum of covalent "
                             f"radii, which normal bonds are shorter than), got {contact_factor!r}")
        self.contact_factor = None if contact_factor is None else float(contact_factor)
        self.temperature_factor = _above_one("temperature_factor", temperature_factor,
                                             "a multiple of the run's temperature", allow_none=True)
        self.temperature_K = positive_number("temperature_K", temperature_K, allow_none=True,
                                             meaning="temperature in K")
        self.bond_stretch = _above_one("bond_stretch", bond_stretch,
                                       "a multiple of the starting bond length")
        if not (bonds is None or (isinstance(bonds, str) and bonds == "start")):
            bonds = np.asarray(bonds)
            if bonds.ndim != 2 or bonds.shape[1] != 2 or not np.issubdtype(bonds.dtype,
                                                                           np.integer):
                raise ValueError(f"bonds must be 'start' or an (M, 2) array of atom indices, "
                                 f"got shape {bonds.shape} of {bonds.dtype}")
        self.bonds = bonds
        self._started = False
        self._reference_temperature = self.temperature_K
        self._bond_pairs = self._bond_lengths = None

    def check(self, atoms: Atoms) -> list[Finding]:
        """The criteria `atoms` violates (empty when the frame is fine); the first call records
        the starting bonds and temperature."""
        temperature = _temperature(atoms)
        if not self._started:
            self._started = True
            if self.bonds is not None:
                self._bond_pairs = self._starting_bonds(atoms)
                self._bond_lengths = self._lengths(atoms, self._bond_pairs)
            if self._reference_temperature is None:
                self._reference_temperature = temperature
        findings = []
        if self.contact_factor is not None:
            touching, closest = close_contacts(atoms, self.contact_factor)
            if len(touching):
                findings.append(Finding(
                    "close-contact", f"{len(touching)} atoms closer than {self.contact_factor} x "
                    f"the sum of their covalent radii, the closest {closest:.3f} A apart "
                    f"(atoms {_listed(touching)})", touching))
        if self._bond_pairs is not None and len(self._bond_pairs):
            stretch = self._lengths(atoms, self._bond_pairs) / self._bond_lengths
            broken = self._bond_pairs[stretch > self.bond_stretch]
            if len(broken):
                findings.append(Finding(
                    "bond-broken", f"{len(broken)} bonds stretched beyond {self.bond_stretch} x "
                    f"their starting length, up to {stretch.max():.2f} x (atoms "
                    f"{_listed(np.unique(broken))})", np.unique(broken)))
        limit = (None if self.temperature_factor is None or not self._reference_temperature
                 else self.temperature_factor * self._reference_temperature)
        if limit is not None and temperature is not None and temperature > limit:
            findings.append(Finding(
                "hot", f"temperature {temperature:.0f} K above {self.temperature_factor:g} x "
                f"{self._reference_temperature:.0f} K", np.arange(len(atoms))))
        return findings

    def _starting_bonds(self, atoms: Atoms) -> np.ndarray:
        if not isinstance(self.bonds, str):
            if self.bonds.size and (self.bonds.min() < 0 or self.bonds.max() >= len(atoms)):
                raise ValueError(f"bonds name atoms outside 0..{len(atoms) - 1}")
            return self.bonds.astype(int)
        i, j, _ = close_pairs(atoms, BOND_FACTOR)
        bonded = i < j  # (an atom bonded to its own image is no bond to watch)
        return np.stack([i[bonded], j[bonded]], axis=1)

    @staticmethod
    def _lengths(atoms: Atoms, pairs: np.ndarray) -> np.ndarray:
        vectors = atoms.positions[pairs[:, 1]] - atoms.positions[pairs[:, 0]]
        return find_mic(vectors, atoms.cell, atoms.pbc)[1]


def non_finite(name: str, value) -> Finding | None:
    """A non-finite Finding naming the first atom where `value` (e.g. positions, momenta) is
    NaN or inf, or None when it is all finite."""
    array = np.asarray(value, dtype=float)
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    atom = np.argwhere(bad)[0][0] if array.ndim else None
    where = "" if atom is None else f" (first at atom {atom})"
    return Finding("non-finite", f"{name} not finite{where}",
                   np.array([] if atom is None else [atom], dtype=int))


def _temperature(atoms: Atoms) -> float | None:
    """Kinetic temperature (K) of the frame, None without velocities."""
    if "momenta" not in atoms.arrays:
        return None
    return float(atoms.get_temperature())


def _listed(indices: np.ndarray, most: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:most])
    return shown + (", ..." if len(indices) > most else "")
