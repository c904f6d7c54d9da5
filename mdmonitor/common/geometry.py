"""The geometry every neighbour search needs: finite positions and cell, and periodic cell
vectors that span a length, area or volume. Checked before a model, the aggregation or a cut
sees a structure (MACE's neighbour search hangs for minutes on NaN positions, and a zero
periodic cell gives it endless images)."""

from __future__ import annotations

import numpy as np
from ase.data import covalent_radii
from ase.geometry import complete_cell
from ase.neighborlist import neighbor_list
from scipy.spatial import cKDTree

from .settings import finite_array

BOND_FACTOR = 1.2  # covalently bonded when closer than 1.2 x (sum of covalent radii)
# Two atoms closer than 0.1 x the sum of their covalent radii overlap (0.06 A for H-H, 0.26 A
# for Cu-Cu): no physical structure comes near it (the shortest bond, H2's 0.74 A, is 1.2 x),
# and MACE gives NaN for atoms at one position.
OVERLAP_FACTOR = 0.1


def check_structure(atoms, what: str = "the structure") -> None:
    """ValueError, its message starting with `what`, unless `atoms` has finite positions and cell
    and periodic cell vectors that span a length, area or volume: what any neighbour search needs
    (MACE's hangs for minutes on NaN positions, and a zero periodic cell gives it endless images).
    """
    try:
        checked_geometry(atoms.positions, atoms.cell.array, atoms.pbc)
        _require_apart(atoms)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def _require_apart(atoms) -> None:
    """ValueError naming the closest pair of atoms (or atom and periodic image) that overlap."""
    i, j, d = close_pairs(atoms, OVERLAP_FACTOR)
    if len(d):
        k = int(np.argmin(d))
        a, b = int(i[k]), int(j[k])
        image = "" if a != b else " (its own periodic image)"
        raise ValueError(
            f"atoms {a} ({atoms.get_chemical_symbols()[a]}) and {b} "
            f"({atoms.get_chemical_symbols()[b]}){image} are {d[k]:.3g} A apart, closer than "
            f"{OVERLAP_FACTOR} x the sum of their covalent radii: overlapping atoms (a duplicated "
            f"atom, or coordinates in the wrong unit?)" + (f"; {len(d)} such pairs" if len(d) > 1
                                                        else ""))


def close_pairs(atoms, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, d): each pair of atoms, or of an atom and a periodic image of another (or of
    itself), closer than `factor` x (r_i + r_j), with r the covalent radii, once with i <= j;
    d their distance in A."""
    radii = covalent_radii[atoms.numbers]
    if len(atoms) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    i, j, d = _pairs_within(atoms, factor * 2.0 * radii.max())
    close = d < factor * (radii[i] + radii[j])
    return i[close], j[close], d[close]


def _pairs_within(atoms, cutoff: float):
    """(i, j, d) of the pairs closer than `cutoff`, each once with i <= j: a k-d tree over the
    atoms wrapped into the cell and the images of those within `cutoff` of a periodic face (25x
    faster than ase's neighbor_list at 864 atoms); ase's for cells thinner than 2 x cutoff."""
    positions, pbc = atoms.positions, np.asarray(atoms.pbc, dtype=bool)
    cell = complete_cell(atoms.cell.array)
    try:
        inverse = np.linalg.inv(cell)
    except np.linalg.LinAlgError:
        inverse = None
    heights = None if inverse is None else 1.0 / np.linalg.norm(inverse, axis=0)
    if inverse is None or np.any(heights[pbc] < 2.0 * cutoff):
        i, j, d = neighbor_list("ijd", atoms, cutoff, self_interaction=False)
        once = i <= j  # (a pair with its own image appears with both shifts: kept twice)
        return i[once], j[once], d[once]
    fractional = positions @ inverse
    fractional[:, pbc] %= 1.0
    index, shifts = np.arange(len(atoms)), np.zeros((len(atoms), 3), dtype=int)
    for axis in np.flatnonzero(pbc):  # (images of images too: corners and edges)
        near = fractional[:, axis] < cutoff / heights[axis]
        image = fractional[near].copy()
        image[:, axis] += 1.0
        fractional = np.concatenate([fractional, image])
        index = np.concatenate([index, index[near]])
        image_shifts = shifts[near].copy()
        image_shifts[:, axis] += 1
        shifts = np.concatenate([shifts, image_shifts])
    points = fractional @ cell
    pairs = cKDTree(points).query_pairs(cutoff, output_type="ndarray")
    first, second = pairs[:, 0], pairs[:, 1]
    d = np.linalg.norm(points[second] - points[first], axis=1)
    i, j, shift = index[first], index[second], shifts[second] - shifts[first]
    swap = i > j
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    shift[swap] *= -1
    _, unique = np.unique(np.column_stack([i, j, shift]), axis=0, return_index=True)
    return i[unique], j[unique], d[unique]


def checked_geometry(positions, cell, pbc):
    """positions (N, 3) and cell (3, 3) as float64 arrays, pbc as (3,) bools; ValueError unless
    positions and cell are finite and the periodic cell vectors are not degenerate."""
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    finite_array("positions", positions)

    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3) with cell vectors as rows, got {cell.shape}")
    finite_array("cell", cell, row="cell vector")
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.shape not in ((), (3,)):
        raise ValueError(f"pbc must be one bool or three (one per cell vector), got shape {pbc.shape}")
    pbc = np.broadcast_to(pbc, (3,)).copy()
    _require_nondegenerate(cell, pbc)
    return positions, cell, pbc


def _require_nondegenerate(cell, pbc):
    """ValueError if the periodic cell vectors do not span a length, area or volume."""
    periodic = cell[pbc]
    lengths = np.linalg.norm(periodic, axis=1)
    spanned = np.sqrt(max(np.linalg.det(periodic @ periodic.T), 0.0))
    if np.any(lengths == 0) or spanned <= 1e-9 * np.prod(lengths):
        axes = [int(i) for i in np.flatnonzero(pbc)]
        raise ValueError(
            f"cell is degenerate along the periodic axes {axes}: its vectors there span zero "
            f"length, area or volume (cell={cell.tolist()}); give linearly independent, nonzero "
            "cell vectors for periodic axes or set pbc=False along them"
        )
