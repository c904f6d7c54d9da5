"""The C++ core of the LAMMPS plugin (cpp/), built with CMake and driven through its test
driver, agrees with the Python implementations: aggregation, ranking, centre choice, periodic
images and cube cutting."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.geometry import get_distances
from ase.neighborlist import neighbor_list

from mdmonitor.aggregation import local_mean
from mdmonitor.extraction.centres import choose_centres
from mdmonitor.extraction.cutting import cut_cube, surroundings
from tests.extraction.test_cutting import water_box

CORE = Path(__file__).parents[2] / "cpp"
MOLECULE_REACH = 2.0  # A: cube_cut.h
SKIN = 1.0


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    build = tmp_path_factory.mktemp("cpp-core")
    subprocess.run(["cmake", "-S", str(CORE), "-B", str(build)], check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)

    def run(text):
        done = subprocess.run([str(build / "core_driver")], input=text, text=True,
                              capture_output=True, check=True)
        return done.stdout.split()
    return run


def numbers(*values):
    """Floats as text that reads back exactly."""
    return " ".join(f"{float(v):.17g}" for v in values)


def random_cell(rng, n, pbc):
    """Skewed triclinic cell (A) with `n` random atoms."""
    cell = np.diag(rng.uniform(4.0, 7.0, 3)) + np.triu(rng.uniform(-1.5, 1.5, (3, 3)), 1)
    return Atoms("Cu" * n, scaled_positions=rng.random((n, 3)), cell=cell, pbc=pbc)


def lammps_layout(atoms, cutoff):
    """Local atoms, then every periodic image within cutoff + skin as a ghost atom, and each
    local atom's neighbours within cutoff + skin (beyond the cutoff, as LAMMPS lists hold)."""
    reach = cutoff + SKIN
    centre, other, shifts = neighbor_list("ijS", atoms, reach)
    images = sorted({(int(j), *map(int, s)) for j, s in zip(other, shifts) if any(s)})
    ghosts = np.array(images, dtype=int).reshape(-1, 4)
    owner = np.concatenate([np.arange(len(atoms)), ghosts[:, 0]])
    positions = np.concatenate([atoms.positions,
                                atoms.positions[ghosts[:, 0]] + ghosts[:, 1:] @ atoms.cell.array])
    first, second = neighbor_list("ij", Atoms(atoms.numbers[owner], positions), reach)
    local = first < len(atoms)
    return positions, owner, first[local], second[local]


def driver_mean(driver, atoms, values, cutoff, group=None, shuffle=None):
    """The driver's local means; `shuffle` (a NumPy generator) reorders each neighbour list."""
    positions, owner, first, second = lammps_layout(atoms, cutoff)
    mask = np.ones(len(atoms), int) if group is None else group.astype(int)
    lines = [f"local_mean {len(positions)} {len(atoms)} {numbers(cutoff)} "
             f"{0 if group is None else 1}"]
    lines += [f"{numbers(*x, values[o])} {mask[o]}" for x, o in zip(positions, owner)]
    for i in range(len(atoms)):
        neighbours = second[first == i]
        if shuffle is not None:
            neighbours = shuffle.permutation(neighbours)
        lines.append(f"{i} {len(neighbours)} " + " ".join(map(str, neighbours)))
    result = np.array(driver("\n".join(lines))).reshape(-1, 2)
    return result[:, 1].astype(float)[np.argsort(result[:, 0].astype(int))]


@pytest.mark.parametrize("seed", range(3))
def test_local_mean_equals_python_aggregation(driver, seed):
    """Triclinic cells, mixed pbc, cutoffs beyond half the cell: each ghost image counts."""
    rng = np.random.default_rng(seed)
    atoms = random_cell(rng, 12, pbc=[True, True, seed != 1])
    values = rng.random(len(atoms))
    cutoff = 4.5
    expected = local_mean(atoms.positions, atoms.cell.array, atoms.pbc, values, cutoff)
    assert np.allclose(driver_mean(driver, atoms, values, cutoff), expected, rtol=1e-14)


def test_local_mean_does_not_depend_on_the_neighbour_order(driver):
    """Bit for bit: the neighbour order differs between ranks (and between atoms equivalent by
    symmetry), and a sum in list order differs in the last bits with it."""
    rng = np.random.default_rng(2)
    atoms = random_cell(rng, 12, pbc=True)
    values = rng.random(len(atoms)) * 10.0 ** rng.integers(-3, 3, len(atoms))
    listed = driver_mean(driver, atoms, values, 4.5)
    for seed in range(3):
        shuffled = driver_mean(driver, atoms, values, 4.5, shuffle=np.random.default_rng(seed))
        assert np.array_equal(shuffled, listed)


def test_local_mean_within_a_group_ignores_other_atoms(driver):
    rng = np.random.default_rng(7)
    atoms = random_cell(rng, 16, pbc=True)
    values = rng.random(len(atoms))
    group = rng.random(len(atoms)) < 0.6
    members = atoms[group]
    expected = np.zeros(len(atoms))
    expected[group] = local_mean(members.positions, members.cell.array, members.pbc,
                                 values[group], 4.0)
    assert np.allclose(driver_mean(driver, atoms, values, 4.0, group), expected, rtol=1e-14)


def test_rank_above_orders_by_value_then_tag(driver):
    values = [0.2, 0.5, 0.1, 0.5, 0.3]
    tags = [5, 9, 1, 4, 2]
    lines = ["rank_above 5 0.15"] + [f"{v} {t}" for v, t in zip(values, tags)]
    assert [int(i) for i in driver("\n".join(lines))] == [3, 1, 4, 0]


def cell_lines(atoms):
    return ([numbers(*row) for row in atoms.cell.array]
            + [" ".join(str(int(p)) for p in atoms.pbc)])


@pytest.mark.parametrize("pbc", [True, [True, False, True]])
def test_minimum_image_distance_equals_ase(driver, pbc):
    rng = np.random.default_rng(3)
    atoms = random_cell(rng, 20, pbc)
    first, second = atoms.positions[:10], atoms.positions[10:]
    expected = get_distances(first, second, cell=atoms.cell, pbc=atoms.pbc)[1]
    pairs = [numbers(*a, *b) for a in first for b in second]
    text = "\n".join(["distance", *cell_lines(atoms), str(len(pairs)), *pairs])
    assert np.allclose(np.array(driver(text), float), expected.ravel(), rtol=1e-12)


def test_choose_centres_equals_python(driver):
    rng = np.random.default_rng(11)
    atoms = random_cell(rng, 60, pbc=True)
    candidates = rng.permutation(len(atoms))[:40]
    avoid = [int(candidates[5]), 3]
    expected = choose_centres(atoms, candidates, separation=2.5, limit=6, avoid=avoid)
    position_lines = lambda indices: [str(len(indices))] + [  # noqa: E731
        numbers(*atoms.positions[i]) for i in indices]
    text = "\n".join(["choose 2.5 6", *cell_lines(atoms), *position_lines(candidates),
                      *position_lines(avoid)])
    chosen = [int(candidates[int(k)]) for k in driver(text)]
    assert chosen == expected and len(chosen) >= 3


def images_text(atoms, radius, raw):
    return "\n".join(["images", *cell_lines(atoms), numbers(radius), numbers(*raw)])


@pytest.mark.parametrize("pbc", [True, [True, False, True]])
def test_images_within_equals_python_surroundings(driver, pbc):
    """Every periodic image of each atom within a radius larger than the cell."""
    rng = np.random.default_rng(5)
    atoms = random_cell(rng, 6, pbc)
    near = surroundings(atoms, 0, 8.0)
    found = []
    for i in range(len(atoms)):
        rows = np.array(driver(images_text(atoms, 8.0, atoms.positions[i] - atoms.positions[0])),
                        float).reshape(-1, 6)
        found += [(i, *map(int, row[:3]), *row[3:]) for row in rows]
    found.sort(key=lambda row: row[:4])
    expected = sorted(((int(i), *map(int, s), *d) for i, s, d
                       in zip(near.index, near.image, near.displacement)), key=lambda r: r[:4])
    assert [r[:4] for r in found] == [r[:4] for r in expected]
    assert np.allclose([r[4:] for r in found], [r[4:] for r in expected], atol=1e-12)


def cube_cell(triclinic):
    """Rattled fcc Cu with a vacancy, triclinic (primitive) or orthogonal, and an O atom."""
    atoms = (bulk("Cu", "fcc", a=3.61).repeat(4) if triclinic
             else bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3))
    del atoms[5]
    atoms.numbers[7] = 8
    atoms.rattle(0.15, seed=2)
    return atoms


def driver_cube(driver, atoms, centre, core, length, molecules=False):
    """The driver's cube from every atom and image within its reach (in a shuffled order):
    (n, 5) rows of source index, image and core."""
    reach = length * np.sqrt(3.0) / 2 + (MOLECULE_REACH if molecules else 0.0)
    near = surroundings(atoms, centre, reach)
    shuffled = np.random.default_rng(0).permutation(len(near.index))
    lines = [f"cube {numbers(core, length)} {int(molecules)} {len(shuffled)}"] + [
        f"{near.index[k]} {' '.join(map(str, near.image[k]))} "
        f"{numbers(*near.displacement[k])} {atoms.numbers[near.index[k]]}" for k in shuffled]
    return np.array(driver("\n".join(lines)), int).reshape(-1, 5)


def assert_same_box(rows, expected):
    assert np.array_equal(rows[:, 0], expected.arrays["source_index"])
    assert np.array_equal(rows[:, 1:4], expected.arrays["source_image"])
    assert np.array_equal(rows[:, 4].astype(bool), expected.arrays["core_mask"])


@pytest.mark.parametrize("triclinic", [True, False])
def test_cut_cube_equals_python(driver, triclinic):
    """Same atoms, images and core as cut_cube with box_length only; a box length just above a
    lattice spacing multiple brings atoms in close contact across the faces (dropped)."""
    atoms, centre, core, length = cube_cell(triclinic), 3, 3.0, 7.4
    expected = cut_cube(atoms, centre, core, box_length=length)
    rows = driver_cube(driver, atoms, centre, core, length)
    assert rows[0, 0] == centre
    assert_same_box(rows, expected)
    near = surroundings(atoms, centre, length * np.sqrt(3.0) / 2)
    half = length / 2
    in_cube = np.all((near.displacement >= -half) & (near.displacement < half), axis=1)
    assert len(expected) < in_cube.sum()  # some duplicates were dropped


@pytest.mark.parametrize("centre, length", [(30, 8.0), (31, 8.3), (3, 7.7)])
def test_cut_cube_of_whole_molecules_equals_python(driver, centre, length):
    """Whole waters (a hydrogen's molecule is its nearest oxygen within bond length): the same
    atoms, images and core as cut_cube(..., molecules=True), centred on an oxygen or on a
    hydrogen; every oxygen with both its hydrogens, and molecules left out whole where they come
    in twice across the faces."""
    atoms = water_box()
    expected = cut_cube(atoms, centre, 3.0, box_length=length, molecules=True)
    rows = driver_cube(driver, atoms, centre, 3.0, length, molecules=True)
    assert_same_box(rows, expected)
    assert (expected.numbers == 1).sum() == 2 * (expected.numbers == 8).sum()
    atoms_only = cut_cube(atoms, centre, 3.0, box_length=length)
    assert set(atoms_only.arrays["source_index"]) != set(expected.arrays["source_index"])
