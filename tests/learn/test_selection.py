"""Selection strategies of the loop: random boxes and whole frames, from the MD's frames."""

import ase.io
import numpy as np
import pytest

from mdmonitor import Committee
from mdmonitor.demo import demo_slab
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.learn.selection import (
    STRATEGIES,
    RandomSelection,
    WholeFrameSelection,
    segment_centres,
)
from mdmonitor.monitor import Trigger

SELECTION = {"boxes": 2, "box_length": 7.0, "core_radius": 3.0, "max_per_frame": 1,
             "cooldown": 50, "box": "cube", "host": "fcc", "samples": 1, "frames": "threshold",
             "span": 0.5, "centres": None, "molecules": False, "box_fraction": None}


@pytest.fixture(scope="module")
def pair(models):
    """Two members of the bundled committee: the boxes' border relaxation calls the mean of
    every member (with all four, the two relaxing tests took 90 s of the suite)."""
    return Committee.from_mace(models["committee"][:2])


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
    extractor = STRATEGIES["uncertainty"]().extractor(tmp_path, SELECTION, "gen000", 0, demo_slab())
    assert extractor.max_boxes == SELECTION["boxes"] and extractor.strategy == "cube"
    assert RandomSelection().extractor(tmp_path, SELECTION, "gen000", 0, demo_slab()) is None
    assert WholeFrameSelection().extractor(tmp_path, SELECTION, "gen000", 0, demo_slab()) is None


def test_box_host_cuts_noisy_copies_of_each_centre_in_a_host_crystal(tmp_path):
    selection = {**SELECTION, "box": "host", "samples": 2, "boxes": 4}
    extractor = STRATEGIES["uncertainty"]().extractor(tmp_path, selection, "gen000", 0, demo_slab())
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
        trajectory, tmp_path, pair):
    queues = [tmp_path / "a", tmp_path / "b"]
    counts = [RandomSelection().after_md(trajectory, q, SELECTION, "gen000", 7, pair)
              for q in queues]
    assert counts == [2, 2]
    names = [[p.name for p in CandidateQueue(q).boxes("pending") + CandidateQueue(q).boxes(
        "failed")] for q in queues]
    assert names[0] == names[1]  # the same seed, the same boxes
    boxes = [CandidateQueue(queues[0]).read(p) for p in CandidateQueue(queues[0]).boxes("pending")]
    assert all(b.info["strategy"] == "cube" and b.info["relaxation"] == "relaxed" for b in boxes)
    assert not {b.info["centre_index"] for b in boxes} & {5, 6, 7, 8}  # not the peaks
    assert RandomSelection().after_md(trajectory, queues[0], SELECTION, "gen000", 7,
                                      pair) == 0


def segment_trajectory(tmp_path, gold: bool = True):
    """md.extxyz of 8 monitored frames of a slab whose atoms 0-9 are Au (if `gold`): in frame i,
    atom 20 (Cu) has local uncertainty 1 + i (the largest of every frame) and atom i has
    0.1 * (i % 4) + 0.05."""
    frames = []
    for i in range(8):
        atoms = demo_slab()
        if gold:
            atoms.numbers[:10] = 79
        local = np.full(len(atoms), 0.01)
        local[20] = 1.0 + i
        local[i] = 0.1 * (i % 4) + 0.05
        atoms.arrays.update(local_uncertainty=local, atomic_uncertainty=local.copy())
        atoms.info["step"] = 10 * i
        frames.append(atoms)
    path = tmp_path / "md.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return ase.io.read(path, ":")


def test_segments_give_the_most_uncertain_centre_of_each_segment_of_the_allowed_elements(
        tmp_path):
    frames = segment_trajectory(tmp_path)
    rng = np.random.default_rng(0)
    # the first half (frames 0-3) in 2 segments: frames 0-1 and 2-3
    chosen = segment_centres(frames, 2, (0.0, 0.5), rng)
    assert [(int(f.info["step"]), c) for f, c in chosen] == [(10, 20), (30, 20)]
    chosen = segment_centres(frames, 2, (0.0, 0.5), rng, elements=["Au"])
    assert [(int(f.info["step"]), c) for f, c in chosen] == [(10, 1), (30, 3)]
    # the second half (frames 4-7): Au peaks 0.05, 0.15, 0.25, 0.35 at atoms 4-7
    chosen = segment_centres(frames, 4, (0.5, 1.0), rng, elements=["Au"])
    assert [(int(f.info["step"]), c) for f, c in chosen] == [(40, 4), (50, 5), (60, 6), (70, 7)]
    # random: a random allowed atom of a random frame of each segment, repeatable by seed
    draws = [segment_centres(frames, 4, (0.0, 1.0), np.random.default_rng(3), ["Au"], False)
             for _ in range(2)]
    assert [(int(f.info["step"]), c) for f, c in draws[0]] == \
        [(int(f.info["step"]), c) for f, c in draws[1]]
    assert [int(f.info["step"]) // 20 for f, _ in draws[0]] == [0, 1, 2, 3]  # one per segment
    assert all(f.numbers[c] == 79 for f, c in draws[0])


def test_segment_boxes_and_test_boxes_come_from_their_halves_of_the_md(tmp_path, pair):
    segment_trajectory(tmp_path, gold=False)  # (the bundled models know Cu only)
    selection = {**SELECTION, "frames": "segments", "centres": ["Cu"], "boxes": 2}
    queue, tests = tmp_path / "candidates", tmp_path / "test-candidates"
    strategy = STRATEGIES["uncertainty"]()
    assert not strategy.cuts_during_md(selection)
    assert strategy.extractor(tmp_path, selection, "gen000", 0, demo_slab()) is None
    assert strategy.after_md(tmp_path / "md.extxyz", queue, selection, "gen000", 0,
                             pair) == 2
    assert strategy.test_boxes(tmp_path / "md.extxyz", tests, selection, "gen000", 0, pair,
                               3) == 3
    steps = {q: sorted(CandidateQueue(q).source_steps("gen000")) for q in (queue, tests)}
    assert steps[queue] == [10, 30] and max(steps[tests]) >= 40 and min(steps[tests]) >= 40
    # a rerun (after a restart) writes nothing twice
    assert strategy.after_md(tmp_path / "md.extxyz", queue, selection, "gen000", 0,
                             pair) == 0
