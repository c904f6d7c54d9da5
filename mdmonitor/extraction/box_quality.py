"""Quality gates on a cut box: finite positions, sane cell, close contacts, intact core, relaxed
buffer, and whole molecules kept whole by the relaxation.

`assess` records its measurements in `box.info` (min_distance and core_deviation in A,
max_buffer_force in eV/A) and returns the list of gates the box fails; the queue keeps
boxes that fail any gate in `failed/`, with the reasons, instead of labeling them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.geometry import find_mic
from ase.neighborlist import neighbor_list

from ..common.geometry import BOND_FACTOR, check_structure, close_pairs

CONTACT_FACTOR = 0.5  # default close contact: closer than 0.5 x (sum of covalent radii)
CORE_TOLERANCE = 1e-6  # A


def contact_limit(min_distance: float | None):
    """Pair distance (A) below which two atoms are in close contact, as a function of numbers.

    A number (A) for every pair, or None: CONTACT_FACTOR x the sum of covalent radii
    (1.3 A for Cu-Cu, 0.5 A for O-H).
    """
    if min_distance is None:
        return lambda a, b: CONTACT_FACTOR * (covalent_radii[a] + covalent_radii[b])
    return lambda a, b: np.full(np.shape(a), float(min_distance))


def closest_contact(box: Atoms, limit) -> tuple[float, float]:
    """(shortest interatomic distance in A, smallest distance / limit ratio) under the box's pbc.

    Distances beyond 4 A are not looked at: (inf, inf) when no pair is that close.
    """
    i, j, d = neighbor_list("ijd", box, 4.0, self_interaction=False)
    if not len(d):
        return float("inf"), float("inf")
    ratio = d / limit(box.numbers[i], box.numbers[j])
    return float(d.min()), float(ratio.min())


def core_deviation(box: Atoms, source: Atoms) -> float:
    """Largest distance (A) between a core atom's position relative to the centre (atom 0) in
    the box, taken under the box's periodic images, and the same in the source frame."""
    core = box.arrays["core_mask"]  # (a host box's host atoms have no source atom)
    index, image = box.arrays["source_index"][core], box.arrays["source_image"][core]
    unwrapped = source.positions[index] + image @ source.cell.array
    expected = unwrapped - unwrapped[0]
    found = find_mic(box.positions[core] - box.positions[0], box.cell, box.pbc)[0]
    return float(np.linalg.norm(found - expected, axis=1).max())


def hydrogen_partners(box: Atoms) -> dict[int, list[int]]:
    """For each hydrogen of `box`, the heavy atoms it is covalently bonded to (closer than
    BOND_FACTOR x the sum of covalent radii, under the box's pbc), in index order."""
    i, j, _ = close_pairs(box, BOND_FACTOR)
    partners = {int(h): [] for h in np.flatnonzero(box.numbers == 1)}
    for a, b in zip(i.tolist(), j.tolist()):
        for h, heavy in ((a, b), (b, a)):
            if box.numbers[h] == 1 and box.numbers[heavy] != 1:
                partners[h].append(heavy)
    return {h: sorted(heavy) for h, heavy in partners.items()}


def changed_molecules(box: Atoms, before: dict[int, list[int]]) -> str:
    """"" if every hydrogen bonded to one heavy atom in `before` (hydrogen_partners of the box
    before its relaxation) is bonded to that atom alone now; else what changed."""
    after = hydrogen_partners(box)
    changed = [h for h, heavy in before.items() if len(heavy) == 1 and after[h] != heavy]
    if not changed:
        return ""
    h = changed[0]
    return (f"relaxation changed {len(changed)} molecule bond(s): hydrogen {h} bonded to atom "
            f"{before[h][0]} before, to {after[h] or 'none'} after")


@dataclass
class QualityLimits:
    """Gate limits: close-contact distance (A, None = by covalent radii), core deviation (A),
    largest force on a buffer atom after relaxation (eV/A)."""

    min_distance: float | None = None
    core_tolerance: float = CORE_TOLERANCE
    max_buffer_force: float = 5.0


def assess(box: Atoms, limits: QualityLimits, core_radius: float, source: Atoms | None = None,
           buffer_force: float | None = None, contacts: bool = True,
           hydrogens: dict[int, list[int]] | None = None) -> list[str]:
    """Measure `box`, store the figures in its info, and return the failed gates (empty if none).

    The core is checked against `source` when given; the buffer force when given (eV/A); close
    contacts unless `contacts` is False (a cube still to be relaxed has them at its faces); the
    hydrogens' bonds against `hydrogens` (hydrogen_partners before the relaxation) when given.
    A box with NaN or inf positions or cell, or a degenerate periodic cell, fails at once,
    unmeasured (a neighbour search on it would hang).
    """
    try:
        check_structure(box, "box")
    except ValueError as err:
        box.info["quality"] = str(err)
        return [str(err)]
    failures = []
    lengths = box.cell.lengths()[box.pbc]
    if np.any(lengths <= 2 * core_radius):
        failures.append(f"periodic cell length {lengths.min():.2f} A not above twice the core "
                        f"radius {core_radius} A: the core would see its own images")
    if contacts:
        distance, ratio = closest_contact(box, contact_limit(limits.min_distance))
        box.info["min_distance"] = round(distance, 6) if np.isfinite(distance) else -1.0
        if ratio < 1.0:
            failures.append(f"close contact: two atoms {distance:.2f} A apart")
    if source is not None:
        deviation = core_deviation(box, source)
        box.info["core_deviation"] = deviation
        if deviation > limits.core_tolerance:
            failures.append(f"core moved by {deviation:.2e} A from its source geometry")
    if buffer_force is not None:
        box.info["max_buffer_force"] = round(buffer_force, 6)
        if buffer_force > limits.max_buffer_force:
            failures.append(f"buffer force {buffer_force:.2f} eV/A above "
                            f"{limits.max_buffer_force} eV/A after relaxation")
    if hydrogens is not None:
        changed = changed_molecules(box, hydrogens)
        if changed:
            failures.append(changed)
    box.info["quality"] = "; ".join(failures) if failures else "ok"
    return failures
