"""GFN1-xTB (tblite) as the labeler's reference: the labels are tblite's own, every box once."""

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdmonitor.extraction.candidates import CandidateQueue, box_name
from mdmonitor.labeling.labeler import Labeler
from mdmonitor.labeling.reference import Reference

tblite_ase = pytest.importorskip("tblite.ase")

XTB = {"method": "GFN1-xTB", "verbosity": 0}
SPACING = 3.1  # A between the waters of a grid: about 1 g/cm3


def water_grid(repeats: tuple[int, int, int], seed: int) -> Atoms:
    """Waters on a periodic grid of SPACING, each turned at random and rattled by 0.03 A, as a
    queue box: the first molecule is the core, the rest the buffer."""
    rng = np.random.default_rng(seed)
    box = Atoms(cell=np.multiply(repeats, SPACING), pbc=True)
    for site in np.ndindex(*repeats):
        water = molecule("H2O")
        water.euler_rotate(*rng.uniform(0, 360, 3), center=water.positions[0])
        water.translate(np.multiply(site, SPACING) + 0.5 - water.positions[0])
        box += water
    box.positions += rng.normal(scale=0.03, size=box.positions.shape)
    box.arrays["core_mask"] = np.arange(len(box)) < 3
    box.arrays["source_index"] = np.arange(len(box))
    box.info.update(strategy="cube", relaxation="none", centre_index=0)
    return box


def queue_of(root, boxes) -> tuple[CandidateQueue, list[str]]:
    queue = CandidateQueue(root)
    names = [box_name("water", step, 0) for step in range(len(boxes))]
    for box, name in zip(boxes, names):
        queue.write(box, name)
    return queue, names


def assert_labels_are_direct_xtb_calls(queue, names):
    """Each box once in the dataset, its labels those of a fresh tblite call on its atoms."""
    dataset = ase.io.read(queue.dataset, index=":")
    assert sorted(frame.info["box"] for frame in dataset) == sorted(names)
    for frame in dataset:  # (extxyz stores positions and forces to 1e-8)
        direct = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=True)
        direct.calc = tblite_ase.TBLite(**XTB)
        assert frame.info["REF_energy"] == pytest.approx(direct.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(frame.arrays["REF_forces"], direct.get_forces(), atol=1e-6)
        np.testing.assert_allclose(frame.info["REF_stress"], direct.get_stress(), atol=1e-7)
        assert np.abs(frame.arrays["REF_forces"].sum(axis=0)).max() < 1e-5  # eV/A
        assert frame.info["labeled_with"] == "tblite.ase:TBLite"


def test_boxes_labeled_on_two_workers_carry_tblites_energy_forces_and_stress(tmp_path):
    boxes = [water_grid((2, 2, 2), seed=1), water_grid((3, 2, 1), seed=2)]  # 24 and 18 atoms
    queue, names = queue_of(tmp_path, boxes)
    summary = Labeler(queue, Reference("tblite.ase:TBLite", XTB), workers=2).run(progress=False)
    assert sorted(summary.labeled) == sorted(names) and not summary.failed
    assert_labels_are_direct_xtb_calls(queue, names)
    assert queue.boxes("pending") == [] and len(queue.boxes("done")) == 2
    # the energy is that of intact waters: within 1 eV per molecule of a free one (-157 eV;
    # Hartree taken for eV, or a lost molecule, is off by more than 100 eV)
    free = molecule("H2O")
    free.calc = tblite_ase.TBLite(**XTB)
    for frame in ase.io.read(queue.dataset, index=":"):
        per_water = frame.info["REF_energy"] / (len(frame) // 3)
        assert per_water == pytest.approx(free.get_potential_energy(), abs=1.0)


def test_labels_do_not_depend_on_the_box_labeled_before(tmp_path):
    """tblite starts an SCF from its last wavefunction when only positions and cell changed:
    without a reset between boxes, the second box's forces were off by up to 6e-5 eV/A."""
    boxes = [water_grid((2, 2, 2), seed=1), water_grid((2, 2, 2), seed=3)]  # same elements
    queue, names = queue_of(tmp_path, boxes)
    Labeler(queue, Reference("tblite.ase:TBLite", XTB)).run(progress=False)  # one calculator
    assert_labels_are_direct_xtb_calls(queue, names)
