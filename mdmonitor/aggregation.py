"""Spatial aggregation: the mean of a per-atom quantity over each atom's cutoff sphere.

Heid et al. 2024, Eq. 10::

    s_j^local = (1 / N_j) * sum_{n in N(j)} s_n

where N(j) holds atom j itself plus every neighbour n with |r_n + S.cell - r_j| < cutoff, counted
once per periodic image S (so with a cutoff beyond half the cell the same atom, and images of j
itself, count several times). Distances are compared strictly (< cutoff), as vesin and ASE do.

Pairs come from vesin; a numba kernel reduces the values over them. vesin 0.6.2 was checked pair by
pair against `local_mean_reference` and `ase.neighborlist.neighbor_list` for cutoffs beyond half
the cell, beyond the cell and beyond twice the cell, mixed pbc, skewed triclinic cells, unwrapped
positions and zero or arbitrary cell vectors along non-periodic axes, and agreed in every case, so
no fallback is needed; it needs neither wrapped positions nor a box along non-periodic axes.
"""

import itertools
import math
import numbers

import numpy as np
import vesin
from numba import njit


def local_mean(positions, cell, pbc, values, cutoff):
    """Mean of `values` over each atom and its neighbours closer than `cutoff` (A).

    positions (N, 3) A, cell (3, 3) A (rows are cell vectors), pbc (3,) bool, values (N,) or (N, k)
    of any per-atom quantity -> float64 array of the shape of `values`.
    """
    positions, cell, pbc, values, cutoff = _validated(positions, cell, pbc, values, cutoff)
    if len(values) == 0:
        return values.copy()
    first, second = _neighbor_pairs(positions, cell, pbc, cutoff)
    table = values.reshape(len(values), -1)
    return _mean_over_pairs(first, second, table).reshape(values.shape)


def aggregate(atoms, values, cutoff):
    """Mean of per-atom `values` over each atom of `atoms` and its neighbours closer than `cutoff` (A).

    values (N,) or (N, k) -> float64 array of the same shape (Heid et al. 2024, Eq. 10).
    """
    return local_mean(atoms.positions, atoms.cell.array, atoms.pbc, values, cutoff)


def local_mean_reference(positions, cell, pbc, values, cutoff):
    """Brute-force NumPy `local_mean` over every periodic image in reach (O(N^2 x images), tests only)."""
    positions, cell, pbc, values, cutoff = _validated(positions, cell, pbc, values, cutoff)
    table = values.reshape(len(values), -1)
    box = _complete_cell(cell, pbc)
    fractional = np.linalg.solve(box.T, positions.T).T
    fractional[:, pbc] -= np.floor(fractional[:, pbc])  # wrapping keeps the set of pair distances
    wrapped = fractional @ box
    # With fractional differences in (-1, 1), shift S_i moves a pair |S_i| - 1 face-to-face
    # heights apart or more, so |S_i| <= ceil(cutoff / height_i) covers the cutoff sphere.
    heights = abs(np.linalg.det(box)) / np.linalg.norm(np.cross(box[[1, 2, 0]], box[[2, 0, 1]]), axis=1)
    reach = np.where(pbc, np.ceil(cutoff / heights), 0).astype(int)
    sums = table.copy()
    counts = np.ones(len(table))
    for shift in itertools.product(*(range(-r, r + 1) for r in reach)):
        offset = np.array(shift, dtype=float) @ box
        distances = np.linalg.norm(wrapped[None, :, :] + offset - wrapped[:, None, :], axis=-1)
        inside = distances < cutoff
        if not any(shift):
            np.fill_diagonal(inside, False)
        sums += inside @ table
        counts += inside.sum(axis=1)
    return (sums / counts[:, None]).reshape(values.shape)


def _neighbor_pairs(positions, cell, pbc, cutoff):
    """Full list of (centre, neighbour) index pairs closer than `cutoff` (A), one per periodic image."""
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    return calculator.compute(positions, cell, pbc, quantities="ij")


@njit(cache=True)  # fastmath off: sums run in pair order, so results are reproducible
def _mean_over_pairs(first, second, values):
    """values (N, k) averaged over each centre itself plus its pairs (first[p] <- second[p])."""
    n_atoms, n_columns = values.shape
    sums = values.copy()
    counts = np.ones(n_atoms)
    for p in range(first.shape[0]):
        centre = first[p]
        neighbour = second[p]
        counts[centre] += 1.0
        for c in range(n_columns):
            sums[centre, c] += values[neighbour, c]
    for i in range(n_atoms):
        for c in range(n_columns):
            sums[i, c] /= counts[i]
    return sums


def _mean_over_pairs_numpy(first, second, values):
    """Plain NumPy (np.bincount) version of `_mean_over_pairs`, used by the tests to check it."""
    first = first.astype(np.intp)
    second = second.astype(np.intp)
    n_atoms = len(values)
    sums = values.copy()
    for c in range(values.shape[1]):
        sums[:, c] += np.bincount(first, weights=values[second, c], minlength=n_atoms)
    counts = 1.0 + np.bincount(first, minlength=n_atoms)
    return sums / counts[:, None]


def _validated(positions, cell, pbc, values, cutoff):
    """Inputs as C-contiguous float64 arrays and a float cutoff; ValueError on bad input."""
    if (
        not isinstance(cutoff, numbers.Real)
        or isinstance(cutoff, bool)
        or not (math.isfinite(cutoff) and cutoff > 0)
    ):
        raise ValueError(f"cutoff must be a positive finite number (a distance in A), got {cutoff!r}")

    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    _require_finite("positions", positions)
    n_atoms = len(positions)

    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3) with cell vectors as rows, got {cell.shape}")
    if not np.isfinite(cell).all():
        raise ValueError(f"cell must be finite, got {cell.tolist()}")
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.shape not in ((), (3,)):
        raise ValueError(f"pbc must be one bool or three (one per cell vector), got shape {pbc.shape}")
    pbc = np.broadcast_to(pbc, (3,)).copy()
    _require_nondegenerate(cell, pbc)

    values = np.asarray(values, dtype=np.float64)
    if values.ndim not in (1, 2):
        raise ValueError(f"values must have shape (N,) or (N, k), got {values.shape}")
    if len(values) != n_atoms:
        raise ValueError(
            f"values has {len(values)} entries along its first axis but there are {n_atoms} atoms; "
            "give one value (or one row) per atom"
        )
    _require_finite("values", values)
    return positions, cell, pbc, np.ascontiguousarray(values), float(cutoff)


def _require_finite(name, array):
    """ValueError naming the first atom whose row of `array` holds NaN or inf."""
    bad = ~np.isfinite(array).all(axis=tuple(range(1, array.ndim)))
    if bad.any():
        atom = int(np.argmax(bad))
        raise ValueError(
            f"{name} must be finite, but atom {atom} has {array[atom]}; "
            f"fix or drop atom {atom} before aggregating"
        )


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


def _complete_cell(cell, pbc):
    """`cell` with non-periodic rows replaced by unit vectors orthogonal to the periodic rows."""
    n_periodic = int(pbc.sum())
    # Rows of Vt beyond the rank of the periodic vectors span their orthogonal complement.
    complement = np.linalg.svd(np.vstack([cell[pbc], np.zeros((3, 3))]))[2][n_periodic:]
    box = cell.copy()
    box[~pbc] = complement
    return box
