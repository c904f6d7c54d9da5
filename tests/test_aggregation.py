"""Spatial aggregation (Heid et al. 2024, Eq. 10): local means over cutoff spheres."""

import subprocess
import sys

import numba
import numpy as np
import pytest
import vesin
from ase import Atoms
from ase.build import bulk

from mdmonitor import aggregation
from mdmonitor.aggregation import (
    aggregate,
    local_mean,
    local_mean_over_pairs,
    local_mean_reference,
)


def random_system(seed, edge, pbc, n_columns=None):
    """5-40 atoms, unwrapped, in a skewed triclinic cell of ~`edge` A, with random values."""
    rng = np.random.default_rng(seed)
    tilt = rng.uniform(-0.35, 0.35, (3, 3)) * (1 - np.eye(3))
    cell = (np.diag(rng.uniform(0.9, 1.1, 3)) + tilt) * edge
    n_atoms = int(rng.integers(5, 41))
    positions = rng.uniform(-1.5, 2.5, (n_atoms, 3)) @ cell
    shape = (n_atoms,) if n_columns is None else (n_atoms, n_columns)
    return positions, cell, np.array(pbc), rng.normal(size=shape)


def vesin_local_mean(positions, cell, pbc, values, cutoff):
    """The same mean reduced in NumPy over vesin's full pair list."""
    pairs = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(positions, cell, pbc,
                                                                      quantities="ij")
    return local_mean_over_pairs(*pairs, values)


REGIMES = {
    "cutoff below half the cell": (9.0, 3.5),
    "cutoff beyond half the cell": (5.0, 3.5),
    "cutoff beyond the whole cell": (3.5, 6.0),
    "cutoff beyond twice the cell": (2.5, 6.0),
}


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, False, False)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_local_mean_equals_brute_force_reference_on_random_triclinic_cells(seed, pbc, regime):
    edge, cutoff = REGIMES[regime]
    for n_columns in (None, 3):
        positions, cell, pbc, values = random_system(seed, edge, pbc, n_columns)
        result = local_mean(positions, cell, pbc, values, cutoff)
        assert result.shape == values.shape
        assert result.dtype == np.float64
        np.testing.assert_allclose(result, local_mean_reference(positions, cell, pbc, values, cutoff),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pbc", [(False, False, False), (True, True, False), (False, True, False)])
def test_local_mean_equals_reference_with_zero_cell_vectors_along_non_periodic_axes(pbc):
    positions, cell, pbc, values = random_system(3, 3.5, pbc, n_columns=2)
    cell[~pbc] = 0.0
    np.testing.assert_allclose(local_mean(positions, cell, pbc, values, 6.0),
                               local_mean_reference(positions, cell, pbc, values, 6.0),
                               rtol=1e-12, atol=1e-12)


def test_aggregate_on_atoms_equals_local_mean_on_its_arrays():
    positions, cell, pbc, values = random_system(4, 5.0, (True, False, True))
    atoms = Atoms(f"Cu{len(positions)}", positions=positions, cell=cell, pbc=pbc)
    np.testing.assert_array_equal(aggregate(atoms, values, 3.5),
                                  local_mean(positions, cell, pbc, values, 3.5))


def test_local_mean_is_invariant_under_rigid_translation_with_periodic_wrap():
    positions, cell, _, values = random_system(5, 5.0, (True, True, True))
    atoms = Atoms(f"Cu{len(positions)}", positions=positions, cell=cell, pbc=True)
    expected = aggregate(atoms, values, 3.5)
    atoms.translate([7.3, -12.1, 4.4])
    atoms.wrap()
    np.testing.assert_allclose(aggregate(atoms, values, 3.5), expected, rtol=1e-12)


def test_local_mean_follows_a_permutation_of_the_atoms():
    positions, cell, pbc, values = random_system(6, 4.0, (True, False, True), n_columns=2)
    order = np.random.default_rng(6).permutation(len(positions))
    expected = local_mean(positions, cell, pbc, values, 5.0)[order]
    np.testing.assert_allclose(local_mean(positions[order], cell, pbc, values[order], 5.0), expected,
                               rtol=1e-12)


def test_local_mean_of_a_replicated_cell_is_the_replicated_result():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.1, seed=7)
    values = np.random.default_rng(7).normal(size=(len(atoms), 2))
    expected = aggregate(atoms, values, 5.0)  # the cutoff exceeds the 3.61 A cell
    np.testing.assert_allclose(aggregate(atoms.repeat((2, 1, 3)), np.tile(values, (6, 1)), 5.0),
                               np.tile(expected, (6, 1)), rtol=1e-12)


def test_constant_values_give_the_same_constant_back():
    positions, cell, pbc, _ = random_system(8, 3.5, (True, True, False))
    np.testing.assert_allclose(local_mean(positions, cell, pbc, np.full(len(positions), 0.25), 6.0), 0.25)


@pytest.mark.parametrize("pbc, cutoff", [(False, 6.0), (True, 2.0), (True, 6.0)])
def test_a_single_atom_keeps_its_own_value(pbc, cutoff):
    """Alone, or with its own periodic images (cutoff 6 A in a 3 A cell) which carry the same value."""
    atoms = Atoms("Cu", positions=[[0.5, 0.5, 0.5]], cell=np.eye(3) * 3.0, pbc=pbc)
    np.testing.assert_allclose(aggregate(atoms, [1.7], cutoff), [1.7])


def test_every_periodic_image_within_the_cutoff_counts_once_including_images_of_the_atom_itself():
    """Cutoff 2.5 A along a 2 A periodic axis: each atom sees itself, its own images at +-2 A and
    the other atom's images at +-1 A (those at +-3 A are out of reach)."""
    positions = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    cell = np.diag([2.0, 3.0, 9.0])
    result = local_mean(positions, cell, (True, False, False), [0.0, 6.0], 2.5)
    np.testing.assert_allclose(result, [(0 + 0 + 0 + 6 + 6) / 5, (6 + 6 + 6 + 0 + 0) / 5])


def test_neighbours_exactly_at_the_cutoff_are_excluded():
    positions = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    assert local_mean(positions, np.zeros((3, 3)), False, [0.0, 1.0], 2.0).tolist() == [0.0, 1.0]
    assert local_mean(positions, np.zeros((3, 3)), False, [0.0, 1.0], 2.0001).tolist() == [0.5, 0.5]


@pytest.mark.parametrize("values", [np.zeros(0), np.zeros((0, 3))])
def test_an_empty_system_gives_an_empty_result(values):
    result = local_mean(np.zeros((0, 3)), np.eye(3), True, values, 3.0)
    assert result.shape == values.shape
    assert aggregate(Atoms(), [], 3.0).shape == (0,)


@pytest.mark.parametrize("cutoff", [0, -1.0, float("nan"), float("inf"), "3", None, True, [3.0]])
def test_a_cutoff_that_is_not_a_positive_finite_number_is_rejected(cutoff):
    with pytest.raises(ValueError, match="cutoff must be a positive finite number"):
        local_mean(np.zeros((2, 3)), np.eye(3), True, [1.0, 2.0], cutoff)


def test_values_of_the_wrong_length_are_rejected_with_both_lengths():
    with pytest.raises(ValueError, match="values has 7 entries .* there are 8 atoms"):
        local_mean(np.random.default_rng(0).random((8, 3)), np.eye(3) * 5, True, np.ones(7), 3.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_naming_the_first_bad_atom(bad):
    values = np.ones((8, 2))
    values[5, 1] = bad
    values[3, 0] = bad
    with pytest.raises(ValueError, match="values must be finite, but atom 3 has"):
        local_mean(np.random.default_rng(0).random((8, 3)), np.eye(3) * 5, True, values, 3.0)


@pytest.mark.parametrize("cell, pbc", [
    (np.zeros((3, 3)), (True, True, True)),
    ([[3.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 0.0, 3.0]], (True, True, True)),
    ([[3.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, 3.0]], (True, True, False)),
    ([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]], (False, False, True)),
])
def test_a_degenerate_cell_along_periodic_axes_is_rejected(cell, pbc):
    with pytest.raises(ValueError, match="cell is degenerate along the periodic axes"):
        local_mean(np.zeros((2, 3)), cell, pbc, [1.0, 2.0], 3.0)


def test_a_degenerate_cell_along_non_periodic_axes_is_accepted():
    cell = [[3.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    positions = [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    np.testing.assert_allclose(local_mean(positions, cell, (True, False, False), [1.0, 2.0], 3.5), [1.5, 1.5])


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("pbc", [(True, True, True), (False, True, True), (True, False, False)])
@pytest.mark.parametrize("seed", [10, 11])
def test_local_mean_equals_the_mean_over_vesins_pair_list(seed, pbc, regime):
    edge, cutoff = REGIMES[regime]
    positions, cell, pbc, values = random_system(seed, edge, pbc, n_columns=2)
    np.testing.assert_allclose(local_mean(positions, cell, pbc, values, cutoff),
                               vesin_local_mean(positions, cell, pbc, values, cutoff),
                               rtol=1e-12, atol=1e-12)


def switch_cutoffs(height, bins_per_cutoff):
    """Cutoffs (A) at which the grid along an axis `height` A high changes its number of bins or
    its reach, each just below, at, and just above the change."""
    at = [bins_per_cutoff * height / k for k in range(1, 7)] + [3 * height, 5 * height]
    return [c * f for c in at for f in (1 - 1e-7, 1.0, 1 + 1e-7)]


@pytest.mark.parametrize("bins_per_cutoff", [1, 2, 3])
@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_local_mean_is_exact_on_both_sides_of_each_change_of_the_bin_grid(pbc, bins_per_cutoff,
                                                                          monkeypatch):
    """Bins at least a cutoff / m high, m searched to each side, more where the cell is shorter."""
    monkeypatch.setattr(aggregation, "_bins_per_cutoff", lambda *_: bins_per_cutoff)
    positions, cell, pbc, values = random_system(12, 6.0, pbc, n_columns=2)
    box = aggregation._complete_cell(cell, pbc)
    fractional = np.linalg.solve(box.T, positions.T).T
    grids = set()
    for cutoff in switch_cutoffs(aggregation._heights(box)[0], bins_per_cutoff):
        _, _, shape, reach = aggregation._bin_grid(fractional.min(axis=0), fractional.max(axis=0),
                                                   box, pbc, cutoff, len(positions))
        grids.add((tuple(shape), tuple(reach)))
        result = local_mean(positions, cell, pbc, values, cutoff)
        np.testing.assert_allclose(result, local_mean_reference(positions, cell, pbc, values, cutoff),
                                   rtol=1e-12, atol=1e-12, err_msg=f"cutoff {cutoff!r}")
        np.testing.assert_allclose(result, vesin_local_mean(positions, cell, pbc, values, cutoff),
                                   rtol=1e-12, atol=1e-12, err_msg=f"cutoff {cutoff!r}")
    assert len(grids) >= 8  # the cutoffs did cross from one grid to another
    assert bins_per_cutoff in {r for _, reach in grids for r in reach}


def test_neighbours_exactly_at_the_cutoff_are_excluded_across_periodic_faces():
    """A simple cubic lattice 2 A apart (exact in binary): its 6 nearest neighbours, some of them
    periodic images, sit exactly at 2 A."""
    grid = np.arange(0.0, 12.0, 2.0)
    positions = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    values = np.random.default_rng(13).normal(size=len(positions))
    cell = np.eye(3) * 12.0
    np.testing.assert_array_equal(local_mean(positions, cell, True, values, 2.0), values)
    beyond = local_mean(positions, cell, True, values, 2.0 + 1e-9)
    np.testing.assert_allclose(beyond, local_mean_reference(positions, cell, True, values, 2.0 + 1e-9),
                               rtol=1e-12)
    assert not np.allclose(beyond, values)


def test_results_are_bitwise_the_same_on_any_number_of_numba_threads(monkeypatch):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((6, 5, 4))
    atoms.rattle(0.05, seed=14)
    values = np.random.default_rng(14).normal(size=(len(atoms), 2))
    one_thread = aggregate(atoms, values, 4.0)  # a system this small is searched on one thread
    monkeypatch.setattr(aggregation, "_PARALLEL_FROM", 0)
    threads = numba.get_num_threads()
    try:
        for n_threads in {n for n in (1, 2, threads) if n <= numba.config.NUMBA_NUM_THREADS}:
            numba.set_num_threads(n_threads)
            np.testing.assert_array_equal(aggregate(atoms, values, 4.0), one_thread)
            assert numba.get_num_threads() == n_threads  # the caller's setting is kept
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("positions, cell, pbc", [
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 1e6], [0.5, 0.0, 1e6]], np.zeros((3, 3)), False),
    ([[0.0, 0.0, 0.0], [5e3, 5e3, 5e3], [5e3, 5e3, 5e3 + 0.5]], np.eye(3) * 1e4, True),
])
def test_a_sparse_system_far_larger_than_the_cutoff_is_aggregated(positions, cell, pbc):
    """Far more cutoff-sized bins than atoms: a grid that large would not fit in memory."""
    np.testing.assert_allclose(local_mean(positions, cell, pbc, [1.0, 2.0, 4.0], 1.0), [1.0, 3.0, 3.0])


THREADS_SCRIPT = """
import sys
import numpy as np
import torch
from ase.build import bulk
import mdmonitor

torch.set_num_threads({threads})
uq = mdmonitor.Committee.from_mace(mdmonitor.demo_models()["committee"])
atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
atoms.calc = mdmonitor.MonitoredCalculator(uq, cutoff=4.0)
for step in range(3):
    atoms.rattle(0.01, seed=step)
    atoms.get_forces()
large = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((24, 24, 24))  # parallel path: 55 296 atoms
mdmonitor.aggregate(large, np.ones(len(large)), 3.0)
print(torch.get_num_threads())
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_monitored_calls_and_large_aggregations_leave_torchs_thread_count_alone(threads):
    """numba's OpenMP layer shares libgomp with torch; a user's torch.set_num_threads holds."""
    done = subprocess.run([sys.executable, "-c", THREADS_SCRIPT.format(threads=threads)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) == threads
