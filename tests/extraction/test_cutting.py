"""Cutting boxes: core geometry kept exactly through periodic images, whole molecules, seeds."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.geometry import get_distances
from ase.neighborlist import neighbor_list

from mdmonitor.extraction.box_quality import core_deviation
from mdmonitor.extraction.cutting import (
    cut_cluster,
    cut_cube,
    cut_embedding,
    surroundings,
)
from mdmonitor.extraction.extractor import Extractor

CORE = 3.0


def triclinic_cu():
    """108-atom fcc Cu in its (sheared) primitive-cell repetition, rattled."""
    atoms = bulk("Cu", "fcc", a=3.61).repeat((4, 4, 4))
    atoms.rattle(0.05, seed=7)
    atoms.wrap()
    return atoms


def corner_atom(atoms):
    return int(np.argmin(np.linalg.norm(atoms.get_scaled_positions(), axis=1)))


def source_core(atoms, centre, radius):
    """Displacements (A) of the atoms within radius of centre, by ASE's own neighbour list."""
    i, d_vec = neighbor_list("iD", atoms, radius)
    return np.vstack([np.zeros(3), d_vec[i == centre]])


def sorted_rows(vectors):
    return vectors[np.lexsort(np.round(vectors, 8).T[::-1])]


@pytest.mark.parametrize("cut", [
    lambda a, c: cut_cube(a, c, CORE, box_length=8.0),
    lambda a, c: cut_embedding(a, c, CORE, np.random.default_rng(0)),
    lambda a, c: cut_cluster(a, c, CORE, radius=5.0),
], ids=["cube", "embed", "cluster"])
def test_core_keeps_the_source_geometry_for_a_corner_atom_of_a_triclinic_cell(cut):
    atoms = triclinic_cu()
    assert not np.allclose(atoms.cell.angles(), 90)
    centre = corner_atom(atoms)
    box = cut(atoms, centre)
    core = box.arrays["core_mask"]
    assert box.arrays["source_index"][0] == centre
    # the core's displacements from the centre, taken as minimum images in the new box,
    # are exactly those of the source atoms within the core radius
    found = get_distances(box.positions[0], box.positions[core], cell=box.cell,
                          pbc=box.pbc)[0][0]
    np.testing.assert_allclose(sorted_rows(found), sorted_rows(source_core(atoms, centre, CORE)),
                               atol=1e-10)
    assert core_deviation(box, atoms) < 1e-10


def test_small_source_cell_gives_several_images_of_one_atom():
    atoms = bulk("Cu", "fcc", a=3.61)  # one atom: every neighbour is an image of itself
    near = surroundings(atoms, 0, 2.6)
    assert len(near.index) == 13 and set(near.index) == {0}
    np.testing.assert_allclose(near.distance[1:], 3.61 / np.sqrt(2), atol=1e-12)


def test_cube_keeps_the_local_density_with_box_length():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(4)
    box = cut_cube(atoms, 0, CORE, box_length=2 * 3.61)
    assert len(box) == 32  # a 2 x 2 x 2 block of the 4-atom cubic cell
    assert np.allclose(box.positions[0], 3.61)  # centre in the middle
    assert np.allclose(box.cell.lengths(), 7.22) and box.pbc.all()


def test_cube_length_from_the_number_of_atoms_keeps_the_mean_density():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(4)
    atoms.rattle(0.02, seed=1)
    box = cut_cube(atoms, 5, CORE, n_atoms=40)
    assert box.get_volume() == pytest.approx(40 * atoms.get_volume() / len(atoms))
    # the crystal does not fit this cube: of two lattice planes meeting across a face, the
    # outer one is left out rather than squeezed 0.6 A from the other
    assert 24 <= len(box) < 40
    assert neighbor_list("d", box, 2.0).size == 0


def water_box(n_side=4, seed=1):
    """64 randomly oriented water molecules on a jittered grid at about 1 g/cm^3."""
    rng = np.random.default_rng(seed)
    spacing = 3.1
    atoms = Atoms(cell=np.eye(3) * n_side * spacing, pbc=True)
    for point in np.ndindex(n_side, n_side, n_side):
        water = molecule("H2O")
        water.rotate(rng.uniform(0, 360), rng.normal(size=3))
        water.translate(np.array(point) * spacing + rng.uniform(-0.3, 0.3, 3))
        atoms += water
    atoms.wrap()
    return atoms


def test_whole_water_molecules_are_kept_whole():
    atoms = water_box()
    oxygen = np.flatnonzero(atoms.numbers == 8)
    centre = int(oxygen[10])
    box = cut_cube(atoms, centre, CORE, n_atoms=20, molecules=True)
    index = box.arrays["source_index"]
    assert 16 <= (box.numbers == 8).sum() <= 20
    assert (box.numbers == 1).sum() == 2 * (box.numbers == 8).sum()
    for o in np.flatnonzero(box.numbers == 8):
        # every O arrives with the two H of its source molecule, bonded as in the source
        source_h = np.flatnonzero(atoms.numbers == 1)
        bonded = source_h[atoms.get_distances(index[o], source_h, mic=True) < 1.2]
        h_in_box = np.flatnonzero(np.isin(index, bonded))
        assert len(h_in_box) == 2
        lengths = np.linalg.norm(box.positions[h_in_box] - box.positions[o], axis=1)
        np.testing.assert_allclose(lengths, atoms.get_distances(index[o], index[h_in_box],
                                                                mic=True), atol=1e-10)
        assert box.arrays["core_mask"][h_in_box].tolist() == [box.arrays["core_mask"][o]] * 2


def test_embedding_has_no_close_contacts_and_displaced_buffer():
    atoms = triclinic_cu()
    box = cut_embedding(atoms, 0, 4.0, np.random.default_rng(3), noise=0.2, min_distance=1.0)
    i, d = neighbor_list("id", box, 1.0)
    assert len(d) == 0
    assert (~box.arrays["core_mask"]).sum() > 0
    assert box.cell.lengths()[0] > 2 * 4.0


def test_seeded_samples_are_identical_and_distinct_samples_differ(tmp_path):
    atoms = triclinic_cu()
    extractor = Extractor("embed", queue=tmp_path / "q", core_radius=4.0, n_samples=2, seed=5)
    first, again = extractor.cut(atoms, 3, sample=0), extractor.cut(atoms, 3, sample=0)
    other = extractor.cut(atoms, 3, sample=1)
    assert np.array_equal(first.positions, again.positions)
    core = first.arrays["core_mask"]
    np.testing.assert_allclose(first.positions[core] - first.positions[0],
                               other.positions[core] - other.positions[0], atol=1e-12)
    assert not np.allclose(first.positions[~core], other.positions[~core])
