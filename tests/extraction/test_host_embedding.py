"""Host (high-symmetry) embedding: the environment kept exactly inside a periodic host crystal,
no overlaps, the host's atom count, bad hosts refused, noisy samples, labeled end to end."""

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc100
from ase.calculators.emt import EMT
from ase.data import covalent_radii
from ase.geometry import get_distances
from ase.neighborlist import neighbor_list

from mdmonitor.extraction.box_quality import core_deviation
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.extraction.host_embedding import HOST_ATOM, OVERLAP_FACTOR, embed_in_host
from mdmonitor.labeling.labeler import Labeler
from mdmonitor.monitor import Trigger

A = 3.61  # A, fcc Cu (ASE's reference lattice constant)
CORE = 4.0
FCC_VOLUME = A**3 / 4  # A^3 per atom


def cubic_cu(repeat=4):
    return bulk("Cu", "fcc", a=A, cubic=True).repeat(repeat)


def embedded(atoms, centre, host, noise=0.0, seed=0, **options):
    return embed_in_host(atoms, centre, CORE, host, np.random.default_rng(seed), noise,
                         **options)


def sorted_rows(vectors):
    return vectors[np.lexsort(np.round(vectors, 8).T[::-1])]


def host_environment_distances(box):
    """Distances (A) from every host atom to every environment atom (minimum image)."""
    core = box.arrays["core_mask"]
    return get_distances(box.positions[core], box.positions[~core], cell=box.cell, pbc=True)[1]


def test_environment_is_kept_exactly_relative_to_the_centre():
    atoms = bulk("Cu", "fcc", a=A).repeat((4, 4, 4))  # triclinic, rattled
    atoms.rattle(0.05, seed=7)
    atoms.wrap()
    centre = 17
    box = embedded(atoms, centre, "fcc", noise=0.2)
    core = box.arrays["core_mask"]
    i, d_vec = neighbor_list("iD", atoms, CORE)
    expected = np.vstack([np.zeros(3), d_vec[i == centre]])
    found = get_distances(box.positions[0], box.positions[core], cell=box.cell, pbc=True)[0][0]
    np.testing.assert_allclose(sorted_rows(found), sorted_rows(expected), atol=1e-10)
    assert core_deviation(box, atoms) < 1e-10
    assert box.arrays["source_index"][0] == centre
    assert np.all(box.arrays["source_index"][~core] == HOST_ATOM)
    assert np.all(box.arrays["source_image"][~core] == 0)


def test_vacancy_embedded_in_its_own_host_is_the_crystal_with_one_vacancy():
    atoms = cubic_cu()
    del atoms[0]
    vacancy_neighbour = 2  # at a / sqrt(2) from the removed atom
    box = embedded(atoms, vacancy_neighbour, bulk("Cu", "fcc", a=A, cubic=True))
    assert box.info["host_repeat"] == "4x4x4"  # 14.44 A >= 2 x 4 A + 4 A
    assert len(box) == 4**3 * 4 - 1
    distances = neighbor_list("d", box, 3.0)
    np.testing.assert_allclose(distances, A / np.sqrt(2), atol=1e-9)  # every atom on a site
    # and EMT sees the same crystal with one vacancy
    box.calc = EMT()
    atoms.calc = EMT()
    assert box.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-8)


@pytest.mark.parametrize("margin", [4.0, 6.0])
def test_atom_count_is_the_host_density_for_a_rattled_crystal_environment(margin):
    atoms = cubic_cu()
    atoms.rattle(0.05, seed=3)
    box = embedded(atoms, 9, bulk("Cu", "fcc", a=A, cubic=True), margin=margin)
    assert box.cell.lengths().min() >= 2 * CORE + margin
    assert len(box) == round(box.get_volume() / FCC_VOLUME)


def test_surface_environment_keeps_its_vacuum_inside_the_core_sphere():
    slab = fcc100("Cu", size=(4, 4, 6), a=A, vacuum=8.0, periodic=True)
    top = int(np.argmax(slab.positions[:, 2]))
    box = embedded(slab, top, "fcc")  # orthorhombic fcc cell: registered with fcc100
    within = box.get_distances(0, range(len(box)), mic=True) <= CORE
    source_within = slab.get_distances(top, range(len(slab)), mic=True) <= CORE
    assert within.sum() == source_within.sum() == box.arrays["core_mask"].sum()
    # the host's sites in the vacuum half of the sphere (4 above at a/sqrt(2), 1 at a) stay empty
    assert len(box) == round(box.get_volume() / FCC_VOLUME) - 5


def test_a_named_host_takes_the_cell_registered_with_the_environment():
    atoms = cubic_cu()  # axes along <100>
    atoms.rattle(0.05, seed=2)
    box = embedded(atoms, 5, "fcc")  # of the orthorhombic (<110>) and cubic cells: the cubic
    assert box.info["host"] == "Cu4" and box.info["host_misfit_removed"] == 0
    assert len(box) == round(box.get_volume() / FCC_VOLUME)


def test_misregistered_host_leaves_no_overlap_and_nearly_the_host_density():
    atoms = cubic_cu()  # axes along <100>; this host's along <110>: rotated by 45 degrees
    atoms.rattle(0.05, seed=2)
    box = embedded(atoms, 5, bulk("Cu", "fcc", a=A, orthorhombic=True))
    limit = OVERLAP_FACTOR * 2 * covalent_radii[29]  # 2.11 A
    assert host_environment_distances(box).min() >= limit
    from_centre = box.get_distances(0, range(len(box)), mic=True)
    assert from_centre[~box.arrays["core_mask"]].min() > CORE
    # what the overlap removal costs at a 45-degree interface: 14 of 200 sites (measured)
    predicted = box.get_volume() / FCC_VOLUME
    assert box.info["host_misfit_removed"] > 0
    assert 0.9 * predicted <= len(box) < predicted


def test_buffer_noise_has_the_requested_width_and_spares_the_far_host():
    atoms = cubic_cu()
    host = bulk("Cu", "fcc", a=A, cubic=True)
    still = embedded(atoms, 0, host, margin=2.0)
    moved = embedded(atoms, 0, host, noise=0.2, seed=4, margin=2.0)
    assert len(still) == len(moved) == 108 and moved.info["buffer_atoms"] == 48
    shift = moved.positions - still.positions
    buffer = ~moved.arrays["core_mask"] & (np.linalg.norm(shift, axis=1) > 0)
    assert buffer.sum() == 48 and (~moved.arrays["core_mask"] & ~buffer).sum() == 41
    assert shift[buffer].std() == pytest.approx(0.2, rel=0.2)
    assert np.all(still.get_distances(0, np.flatnonzero(buffer), mic=True) <= CORE + 2.0)
    assert np.all(shift[moved.arrays["core_mask"]] == 0)


def test_a_small_host_cell_is_repeated_until_it_holds_environment_and_margin():
    primitive = bulk("Cu", "fcc", a=A)  # one atom, heights 2.08 A
    box = embedded(cubic_cu(), 0, primitive, margin=3.0)
    assert box.info["host_repeat"] == "6x6x6"  # 6 x 2.084 A = 12.5 A >= 11 A
    assert len(box) == 216


def test_host_of_another_element_is_refused_unless_asked_for():
    atoms = cubic_cu()
    aluminium = bulk("Al", "fcc", a=4.05, cubic=True)
    with pytest.raises(ValueError, match=r"holds Al, which the environment .* foreign_host=True"):
        embedded(atoms, 0, aluminium)
    box = embedded(atoms, 0, aluminium, foreign_host=True)
    assert set(box.symbols[~box.arrays["core_mask"]]) == {"Al"}
    assert set(box.symbols[box.arrays["core_mask"]]) == {"Cu"}


@pytest.mark.parametrize("host, options, message", [
    (Atoms("Cu", cell=[3, 3, 3], pbc=[True, True, False]), {}, "periodic along all three"),
    (Atoms(), {}, "no atoms"),
    ("fcx", {}, "not a crystal structure"),
    ("bcc", {}, "no reference lattice constant for bcc Cu.*host_lattice_constant"),
    (42, {}, "ASE Atoms of a periodic crystal"),
], ids=["not-periodic", "empty", "unknown-name", "no-lattice-constant", "not-atoms"])
def test_bad_hosts_are_refused_naming_the_problem(host, options, message):
    with pytest.raises(ValueError, match=message):
        embedded(cubic_cu(), 0, host, **options)


def test_a_named_structure_takes_a_given_lattice_constant():
    box = embedded(cubic_cu(), 0, "bcc", lattice_constant=2.87)
    assert box.info["host"] == "Cu2" and box.info["host_cell"][0] == pytest.approx(2.87)


def test_extractor_settings_for_the_host_strategy(tmp_path):
    with pytest.raises(ValueError, match="strategy 'host' needs host="):
        Extractor("host", queue=tmp_path)
    with pytest.raises(ValueError, match="only it takes one"):
        Extractor("embed", queue=tmp_path, host="fcc")
    with pytest.raises(ValueError, match="periodic along all three"):
        Extractor("host", queue=tmp_path, host=Atoms("Cu", cell=[3, 3, 3]))
    with pytest.raises(ValueError, match="host_lattice_constant must be a positive"):
        Extractor("host", queue=tmp_path, host="bcc", host_lattice_constant=-1)
    assert Extractor("host", queue=tmp_path, host="fcc").noise == 0.2


def vacancy_trigger(atoms, centre, step=0):
    local = np.zeros(len(atoms))
    local[centre] = 1.0
    return Trigger(step, None, atoms.copy(), local.copy(), local, np.array([centre]))


def test_host_boxes_are_queued_in_samples_and_labeled_by_emt(tmp_path):
    atoms = cubic_cu(3)  # 108 atoms, 10.8 A: the host boxes are larger than the frame
    del atoms[0]
    atoms.rattle(0.02, seed=5)
    extractor = Extractor("host", queue=tmp_path, core_radius=3.0, host="fcc", n_samples=3,
                          seed=1)
    names = extractor(vacancy_trigger(atoms, centre=2))
    assert len(names) == 3
    queue = CandidateQueue(tmp_path)
    boxes = [queue.read(tmp_path / "pending" / name) for name in names]
    for box in boxes:
        assert box.info["quality"] == "ok" and box.info["core_deviation"] < 1e-10
        assert box.info["strategy"] == "host" and box.info["noise"] == 0.2
        assert np.all(box.arrays["source_index"][~box.arrays["core_mask"]] == HOST_ATOM)
    assert not np.allclose(boxes[0].positions[~boxes[0].arrays["core_mask"]],
                           boxes[1].positions[~boxes[1].arrays["core_mask"]])

    summary = Labeler(tmp_path, EMT()).run(progress=False)
    assert sorted(summary.labeled) == sorted(names) and not summary.failed
    labeled = ase.io.read(queue.dataset, index=":")
    for frame, box in zip(sorted(labeled, key=lambda f: f.info["box"]), boxes):
        expected = box.copy()
        expected.calc = EMT()
        assert frame.info["REF_energy"] == pytest.approx(expected.get_potential_energy(),
                                                         abs=1e-8)
        np.testing.assert_allclose(frame.arrays["REF_forces"], expected.get_forces(), atol=1e-8)
        assert frame.info["config_type"] == "mdmonitor-host" and len(frame.info["REF_stress"]) == 6
