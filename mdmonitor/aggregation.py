"""Spatial aggregation: the mean of a per-atom quantity over each atom's cutoff sphere.

Heid et al. 2024, Eq. 10::

    s_j^local = (1 / N_j) * sum_{n in N(j)} s_n

where N(j) holds atom j itself plus every neighbour n with |r_n + S.cell - r_j| < cutoff, counted
once per periodic image S (so with a cutoff beyond half the cell the same atom, and images of j
itself, count several times). Distances are compared strictly (< cutoff), as vesin and ASE do.

A fused cell-list kernel sums the values without storing any pair list (building vesin's pair
list alone took 2-9x as long as the whole aggregation at 10^5-10^6 atoms, and 10-45x the memory:
benchmarks/aggregation.py; ~85% of the time is the search, ~5% the binning). A counting sort
puts the atoms into bins on a grid in fractional coordinates, so triclinic cells work: periodic
axes cut the cell, non-periodic ones (spanned by unit vectors normal to the periodic ones, whatever
cell vectors are given there) the atoms' extent, into bins at least cutoff / m high face to face.
For the atoms of each bin the kernel then sums over the atoms closer than the cutoff in the bins
within `reach` (normally m) of it, wrapping bin indices across periodic faces to get each
neighbour's image; every (bin, image) is visited once. Along a periodic axis with fewer than
2 reach + 1 bins a bin is visited as several images, and where the cell is less than a bin high
the reach grows to ceil(cutoff / height), so images of the atom itself and of its neighbours count
as Eq. 10 says. This one path is exact in every regime (cutoffs beyond half the cell or beyond the
cell, mixed pbc, unwrapped positions, zero cell vectors along non-periodic axes); there is no
fallback. The tests check it against the brute-force `local_mean_reference` and against vesin's
pair list reduced by `local_mean_over_pairs`.

Threads: the search is a numba prange over bins; each atom's row is written by its bin only and
summed in a fixed order, so results are bitwise the same on any number of threads. From 50 000
atoms on (`_PARALLEL_FROM`) it runs on all of numba's threads: on the 2-core development machine 2
threads took 0.5-0.7x the time of 1 at 10^5-10^6 atoms while the second core was free, and vesin's
list runs on 2 threads as well (at 10^5 atoms and 4 A the aggregation took 0.78x its time on 1
thread, 0.43x on 2). Smaller systems, such as the monitor's, run in a serial kernel that starts
no thread pool: there 2 threads gained little and lost much while waiting for a core busy with
other work (96 atoms: 1 ms became 3.5-8 ms), and numba's OpenMP workers spin on after a parallel
region, which slowed the next 1-thread MACE call by ~10 ms (66 to 75 ms; not with
OMP_WAIT_POLICY=passive): noise beside a model call on 50 000 atoms. numba's OpenMP layer shares
libgomp with torch, and its first parallel region sets torch's thread count too: the parallel
path puts torch's back, and the serial one never touches it, so mdmonitor leaves the thread
settings of the user's process as it found them.
"""

import itertools
import sys
from contextlib import contextmanager

import numpy as np
from numba import njit, prange

from .common.geometry import checked_geometry
from .common.settings import finite_array, positive_number

# Bins are at least cutoff / m high and m are searched to each side, with m the largest whole
# number that leaves _ATOMS_PER_BIN atoms or more per bin on average: smaller bins scan less
# volume around an atom (27 cutoff^3 for m = 1, 15.6 for m = 2; the sphere is 4.2), fuller ones
# share the set-up of each neighbour run among more atoms. This was fastest on fcc Cu at 3-8 A
# (m = 1 up to 5 A, m = 2 at 6 and 8 A).
_ATOMS_PER_BIN = 2
# The grid is laid out for a cutoff larger by this fraction, so that rounding in the fractional
# coordinates (~1e-16 of a coordinate) never puts a pair closer than the cutoff out of reach.
_MARGIN = 1e-9
# Sparse systems (a large vacuum, atoms far apart along a non-periodic axis) get fewer, larger
# bins: at most this many per atom.
_BINS_PER_ATOM = 4
# From this many atoms on the search runs on all of numba's threads, below on one (see above).
_PARALLEL_FROM = 50_000
# Smallest cutoff (A). Far below any interatomic distance, so a smaller one would change nothing
# (each atom alone), but one whose square underflows to 0 would miss even the atom itself in the
# squared-distance test and make every local value NaN.
MIN_CUTOFF = 1e-6


def local_mean(positions, cell, pbc, values, cutoff):
    """Mean of `values` over each atom and its neighbours closer than `cutoff` (A).

    positions (N, 3) A, cell (3, 3) A (rows are cell vectors), pbc (3,) bool, values (N,) or (N, k)
    of any per-atom quantity -> float64 array of the shape of `values`.
    """
    positions, cell, pbc, values, cutoff = _validated(positions, cell, pbc, values, cutoff)
    if len(values) == 0:
        return values.copy()
    box = _complete_cell(cell, pbc)
    fractional, lowest, highest = _fractional(positions, np.linalg.inv(box))
    lower, scale, shape, reach = _bin_grid(lowest, highest, box, pbc, cutoff, len(positions))
    order, starts, inside = _sorted_into_bins(positions, fractional, box, pbc, lower, scale, shape)
    table = values.reshape(len(values), -1)
    grid = (inside, table[order], order, starts, shape, reach, box, pbc, cutoff * cutoff)
    if len(values) < _PARALLEL_FROM:
        return _means_serial(grid).reshape(values.shape)
    with _torch_threads_kept():
        return _means_parallel(grid).reshape(values.shape)


def checked_cutoff(cutoff, meaning: str = "finite number (a distance in A)") -> float:
    """`cutoff` (A) as a float if it is a finite number >= MIN_CUTOFF; else ValueError "cutoff
    must be a positive `meaning`" or naming MIN_CUTOFF."""
    cutoff = positive_number("cutoff", cutoff, meaning=meaning)
    if cutoff < MIN_CUTOFF:
        raise ValueError(f"cutoff must be at least {MIN_CUTOFF:g} A, got {cutoff!r}: a smaller "
                         "one holds no atom but the atom itself, and a tiny one not even that "
                         "(every local value NaN)")
    return cutoff


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
    reach = np.where(pbc, np.ceil(cutoff / _heights(box)), 0).astype(int)
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


def local_mean_over_pairs(first, second, values):
    """Mean of `values` (N,) or (N, k) over each atom itself plus its pairs (first[p] <- second[p]).

    Plain NumPy (np.bincount) over a full pair list such as vesin's or ASE's "ij": the tests and
    benchmarks/aggregation.py check `local_mean` against it.
    """
    values = np.asarray(values, dtype=np.float64)
    table = values.reshape(len(values), -1)
    first = np.asarray(first, dtype=np.intp)
    second = np.asarray(second, dtype=np.intp)
    sums = table.copy()
    for column in range(table.shape[1]):
        sums[:, column] += np.bincount(first, weights=table[second, column], minlength=len(table))
    counts = 1.0 + np.bincount(first, minlength=len(table))
    return (sums / counts[:, None]).reshape(values.shape)


def _heights(box):
    """Face-to-face heights (A) of the parallelepiped spanned by the rows of `box`."""
    return abs(np.linalg.det(box)) / np.linalg.norm(np.cross(box[[1, 2, 0]], box[[2, 0, 1]]), axis=1)


def _bin_grid(lowest, highest, box, pbc, cutoff, n_atoms):
    """Bin grid over the atoms, per axis: (lower edge, bins per fractional unit, bins, bins searched
    to each side).

    lowest, highest: the atoms' fractional coordinates' range. The grid covers [0, 1) of the
    wrapped fractional coordinate along periodic axes and the atoms' range along the others.
    """
    lower = np.where(pbc, 0.0, lowest)
    extent = np.where(pbc, 1.0, highest - lowest)  # fractional units
    length = extent * _heights(box)  # A
    reach_length = cutoff * (1.0 + _MARGIN)
    shape = np.maximum(1.0, np.floor(_bins_per_cutoff(n_atoms, length, cutoff) * length
                                     / reach_length))
    limit = _BINS_PER_ATOM * n_atoms + 125
    while shape.prod() > limit:
        shape = np.maximum(1.0, np.floor(shape / (shape.prod() / limit) ** (1 / 3)))
    scale = np.divide(shape, extent, out=np.zeros(3), where=extent > 0)
    # A bin is length / shape high, so ceil(reach_length / that) bins to each side cover the
    # cutoff; along a non-periodic axis there are no more than shape - 1 to search.
    reach = np.ceil(reach_length * shape / np.where(length > 0, length, np.inf))
    reach = np.where(pbc, reach, np.minimum(reach, shape - 1))
    return lower, scale, shape.astype(np.int64), reach.astype(np.int64)


def _bins_per_cutoff(n_atoms, length, cutoff):
    """The largest whole m >= 1 that leaves _ATOMS_PER_BIN or more atoms per cutoff / m bin, at the
    atoms' mean density over the grid's lengths (A; each counted as at least a cutoff)."""
    per_cutoff_cube = n_atoms * cutoff**3 / np.prod(np.maximum(length, cutoff))
    return max(1.0, np.floor(np.cbrt(per_cutoff_cube / _ATOMS_PER_BIN)))


@njit(cache=True)
def _fractional(positions, inverse):
    """Fractional coordinates positions @ inverse (N, 3), and their lowest and highest per axis."""
    fractional = np.empty_like(positions)
    lowest = np.full(3, np.inf)
    highest = np.full(3, -np.inf)
    for i in range(positions.shape[0]):
        for axis in range(3):
            f = (positions[i, 0] * inverse[0, axis] + positions[i, 1] * inverse[1, axis]
                 + positions[i, 2] * inverse[2, axis])
            fractional[i, axis] = f
            lowest[axis] = min(lowest[axis], f)
            highest[axis] = max(highest[axis], f)
    return fractional, lowest, highest


@njit(cache=True)
def _sorted_into_bins(positions, fractional, box, pbc, lower, scale, shape):
    """Counting sort of the atoms by bin.

    Returns order (original index of each sorted atom), starts (bin b holds sorted atoms
    starts[b]:starts[b+1]) and the sorted positions (A), moved by whole cell vectors into the cell
    along periodic axes.
    """
    n_atoms = positions.shape[0]
    atom_bins = np.empty(n_atoms, np.int64)
    moved = positions.copy()
    starts = np.zeros(shape[0] * shape[1] * shape[2] + 1, np.int64)
    for i in range(n_atoms):
        index = 0
        for axis in range(3):
            f = fractional[i, axis]
            if pbc[axis]:
                images = np.floor(f)
                f -= images
                for xyz in range(3):
                    moved[i, xyz] -= images * box[axis, xyz]
            b = int(np.floor((f - lower[axis]) * scale[axis]))
            index = index * shape[axis] + min(max(b, 0), shape[axis] - 1)
        atom_bins[i] = index
        starts[index + 1] += 1
    for b in range(len(starts) - 1):
        starts[b + 1] += starts[b]
    filled = starts[:-1].copy()
    order = np.empty(n_atoms, np.int64)
    for i in range(n_atoms):
        order[filled[atom_bins[i]]] = i
        filled[atom_bins[i]] += 1
    return order, starts, moved[order]


@contextmanager
def _torch_threads_kept():
    """numba's OpenMP layer and torch share one libgomp: numba's first parallel region sets the
    OpenMP thread count that torch reads as its own. Put torch's back, if torch is loaded."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if torch is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


@njit(parallel=True, cache=True)
def _means_parallel(grid):
    """Means (N, k) of `grid` (see `_means_of_bin`): a prange over bins on numba's threads, each
    writing only the rows of its bin's atoms."""
    means = np.zeros_like(grid[1])
    counts = np.zeros(len(means), np.int64)
    for b in prange(len(grid[3]) - 1):
        _means_of_bin(b, means, counts, *grid)
    return means


@njit(cache=True)
def _means_serial(grid):
    """`_means_parallel` on the calling thread alone: no numba thread pool is started, so
    neither numba's nor torch's threads are touched."""
    means = np.zeros_like(grid[1])
    counts = np.zeros(len(means), np.int64)
    for b in range(len(grid[3]) - 1):
        _means_of_bin(b, means, counts, *grid)
    return means


@njit(cache=True)  # fastmath off: each atom sums in a fixed order, whatever the thread count
def _means_of_bin(b, means, counts, positions, values, order, starts, shape, reach, box, pbc,
                  cutoff_squared):
    """Write into means[order[s]] the mean of `values` (N, k) over each atom s of bin b and all
    atoms (every periodic image, s itself included) closer than the cutoff; means[order[s]] and
    counts[s] (neighbours found) must be zero on entry.

    positions (N, 3) A and values are in sorted order; order and starts come from
    `_sorted_into_bins`, shape and reach (bins searched to each side) from `_bin_grid`. The atoms
    of one bin share its neighbour bins, so each run of them is set up once per bin.
    """
    if starts[b] == starts[b + 1]:
        return
    n_columns = values.shape[1]
    home_x = b // (shape[1] * shape[2])
    home_y = b // shape[2] - home_x * shape[1]
    home_z = b - (home_x * shape[1] + home_y) * shape[2]
    for dx in range(-reach[0], reach[0] + 1):
        bx, sx = _wrapped(home_x + dx, shape[0], pbc[0])
        if bx < 0:
            continue
        for dy in range(-reach[1], reach[1] + 1):
            by, sy = _wrapped(home_y + dy, shape[1], pbc[1])
            if by < 0:
                continue
            # Consecutive bins along z of one periodic image are one run of sorted atoms.
            dz = -reach[2]
            while dz <= reach[2]:
                bz, sz = _wrapped(home_z + dz, shape[2], pbc[2])
                if bz < 0:
                    dz += 1
                    continue
                last = min(reach[2], dz + shape[2] - 1 - bz)
                first = (bx * shape[1] + by) * shape[2] + bz
                shift_x = sx * box[0, 0] + sy * box[1, 0] + sz * box[2, 0]
                shift_y = sx * box[0, 1] + sy * box[1, 1] + sz * box[2, 1]
                shift_z = sx * box[0, 2] + sy * box[1, 2] + sz * box[2, 2]
                for s in range(starts[b], starts[b + 1]):
                    # neighbour t's image minus atom s: positions[t] + offset
                    offset_x = shift_x - positions[s, 0]
                    offset_y = shift_y - positions[s, 1]
                    offset_z = shift_z - positions[s, 2]
                    row = order[s]
                    for t in range(starts[first], starts[first + last - dz + 1]):
                        x = positions[t, 0] + offset_x
                        y = positions[t, 1] + offset_y
                        z = positions[t, 2] + offset_z
                        if x * x + y * y + z * z < cutoff_squared:
                            counts[s] += 1
                            for c in range(n_columns):
                                means[row, c] += values[t, c]
                dz = last + 1
    for s in range(starts[b], starts[b + 1]):
        for c in range(n_columns):
            means[order[s], c] /= counts[s]


@njit(cache=True, inline="always")
def _wrapped(index, n_bins, periodic):
    """(bin, periodic image) of bin `index` along an axis of `n_bins` bins; bin -1 if `index` is
    off a non-periodic end. Subtraction, not division: |index| rarely exceeds n_bins."""
    if not periodic:
        return (index if 0 <= index < n_bins else -1), 0
    image = 0
    while index < 0:
        index += n_bins
        image -= 1
    while index >= n_bins:
        index -= n_bins
        image += 1
    return index, image


def _validated(positions, cell, pbc, values, cutoff):
    """Inputs as C-contiguous float64 arrays and a float cutoff; ValueError on bad input."""
    cutoff = checked_cutoff(cutoff)
    positions, cell, pbc = checked_geometry(positions, cell, pbc)
    n_atoms = len(positions)

    values = np.asarray(values, dtype=np.float64)
    if values.ndim not in (1, 2):
        raise ValueError(f"values must have shape (N,) or (N, k), got {values.shape}")
    if len(values) != n_atoms:
        raise ValueError(
            f"values has {len(values)} entries along its first axis but there are {n_atoms} atoms; "
            "give one value (or one row) per atom"
        )
    finite_array("values", values)
    return positions, cell, pbc, np.ascontiguousarray(values), cutoff


def _complete_cell(cell, pbc):
    """`cell` with non-periodic rows replaced by unit vectors orthogonal to the periodic rows."""
    n_periodic = int(pbc.sum())
    # Rows of Vt beyond the rank of the periodic vectors span their orthogonal complement.
    complement = np.linalg.svd(np.vstack([cell[pbc], np.zeros((3, 3))]))[2][n_periodic:]
    box = cell.copy()
    box[~pbc] = complement
    return box
