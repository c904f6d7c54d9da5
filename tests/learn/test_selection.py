"""Selection strategies of the loop: random boxes and whole frames, from the MD's frames."""

import ase.io
import numpy as np
import pytest

from mdmonitor.demo import demo_slab
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.learn.selection import STRATEGIES, RandomSelection, WholeFrameSelection
from mdmonitor.monitor import Trigger

SELECTION = {"boxes": 2, "box_length": 8.0, "core_radius": 3.0, "max_per_frame": 1,
             "cooldown": 50, "box": "cube", "host": "fcc", "samples": 1}


@pytest.fixture
def trajectory(tmp_path):
    """md.extxyz of four monitored frames whose peaks are 0.1, 0.4, 0.2, 0.3 (at atom 5 + i)."""
    frames = []
    for i, peak in enumerate((0.1, 0.4, 0.2, 0.3)):
        atoms = demo_slab()
        atoms.rattle(0.02, seed=i)
        local = np.full(len(atoms), 0.01)
        local[5 + i] = peak
        atoms.arrays.update(local_uncertainty=local, atomic_uncertainty=local.copy(),
                            forces=np.ones((len(atoms), 3)))
        atoms.info["step"] = 10 * i
        frames.append(atoms)
    frames.append(demo_slab())  # an unmonitored frame: no uncertainty, never chosen
    frames[-1].info["step"] = 45
    path = tmp_path / "md.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def test_strategies_are_registered_by_name(tmp_path):
    assert set(STRATEGIES) == {"uncertainty", "random", "whole-frame", "pr-guided"}
    extractor = STRATEGIES["uncertainty"]().extractor(tmp_path, SELECTION, "gen000", 0)
    assert extractor.max_boxes == SELECTION["boxes"] and extractor.strategy == "cube"
    assert RandomSelection().extractor(tmp_path, SELECTION, "gen000", 0) is None
    assert WholeFrameSelection().extractor(tmp_path, SELECTION, "gen000", 0) is None


def test_box_host_cuts_noisy_copies_of_each_centre_in_a_host_crystal(tmp_path):
    selection = {**SELECTION, "box": "host", "samples": 2, "boxes": 4}
    extractor = STRATEGIES["uncertainty"]().extractor(tmp_path, selection, "gen000", 0)
    atoms = demo_slab()
    local = np.zeros(len(atoms))
    local[90] = 1.0  # an atom of the top surface
    names = extractor(Trigger(5, None, atoms, local, local, np.array([90])))
    assert len(names) == 2 and names[0].endswith("_s00.extxyz") and names[1].endswith("_s01.extxyz")
    for name in names:
        box = CandidateQueue(tmp_path).read(tmp_path / "pending" / name)
        assert box.info["strategy"] == "host" and (box.arrays["source_index"] == -1).any()


def test_whole_frame_queues_the_frames_with_the_highest_peaks_whole(trajectory, tmp_path):
    queue = tmp_path / "candidates"
    assert WholeFrameSelection().after_md(trajectory, queue, SELECTION, "gen000", 0, None) == 2
    boxes = [CandidateQueue(queue).read(p) for p in CandidateQueue(queue).boxes("pending")]
    assert sorted(b.info["source_step"] for b in boxes) == [10, 30]  # peaks 0.4 and 0.3
    assert all(len(b) == 96 and b.info["relaxation"] == "none" for b in boxes)
    assert all("forces" not in b.arrays and "local_uncertainty" not in b.arrays for b in boxes)
    assert {b.info["centre_index"] for b in boxes} == {6, 8}
    # a rerun (after a restart) writes nothing twice
    assert WholeFrameSelection().after_md(trajectory, queue, SELECTION, "gen000", 0, None) == 0
    assert len(CandidateQueue(queue).boxes("pending")) == 2


def test_random_boxes_are_seeded_cut_around_random_atoms_and_not_written_twice(
        trajectory, tmp_path, committee):
    queues = [tmp_path / "a", tmp_path / "b"]
    counts = [RandomSelection().after_md(trajectory, q, SELECTION, "gen000", 7, committee)
              for q in queues]
    assert counts == [2, 2]
    names = [[p.name for p in CandidateQueue(q).boxes("pending") + CandidateQueue(q).boxes(
        "failed")] for q in queues]
    assert names[0] == names[1]  # the same seed, the same boxes
    boxes = [CandidateQueue(queues[0]).read(p) for p in CandidateQueue(queues[0]).boxes("pending")]
    assert all(b.info["strategy"] == "cube" and b.info["relaxation"] == "relaxed" for b in boxes)
    assert not {b.info["centre_index"] for b in boxes} & {5, 6, 7, 8}  # not the peaks
    assert RandomSelection().after_md(trajectory, queues[0], SELECTION, "gen000", 7,
                                      committee) == 0
