"""PR-guided selection of candidate boxes (seed 000, Sec. 4.1), on real embedded boxes."""

import csv
import shutil

import numpy as np
import pytest

from mdmonitor import LastLayerLPR
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.extraction.pr_selection import (
    centre_atom,
    choose_by_rigidity,
    select_pending,
    targets_rigidity,
)
from tests.embedded_boxes import embedded_pool


@pytest.fixture(scope="module")
def llpr(models):
    return LastLayerLPR.load(models["llpr"])


@pytest.fixture(scope="module")
def pool(llpr, tmp_path_factory):
    root = tmp_path_factory.mktemp("pool") / "queue"
    assert len(embedded_pool(root, llpr).boxes("pending")) >= 6
    return root


@pytest.fixture
def queue(pool, tmp_path):
    shutil.copytree(pool, tmp_path / "queue")
    return CandidateQueue(tmp_path / "queue")


def boxes_of(queue):
    return [queue.read(path) for path in queue.boxes("pending")]


def centre_targets(llpr, boxes):
    return np.stack([llpr.atomic_features(box)[centre_atom(box)] for box in boxes[::2]])


def refitted(llpr, structures):
    """A fresh LLPR of the same matrix with `structures` added by `update` (a model pass)."""
    fresh = LastLayerLPR(llpr.model, llpr.hessian, llpr.regularizer, llpr.forces,
                         llpr.force_weight)
    if structures:
        fresh.update(structures)
    return fresh


def lpr_of(estimator, targets):
    """LPR of each row of `targets` (features): 1 / |L^-1 f|^2."""
    whitened = estimator.whitened(targets.T).numpy()
    return 1 / (whitened * whitened).sum(axis=0)


def test_each_choice_gives_the_targets_the_lpr_of_an_llpr_updated_with_the_boxes(llpr, queue):
    boxes = boxes_of(queue)
    targets = centre_targets(llpr, boxes)
    choice = choose_by_rigidity(llpr, targets, boxes, n=3)
    assert len(choice.chosen) == 3 and len(set(choice.chosen)) == 3
    assert choice.rigidity[0] == pytest.approx(targets_rigidity(1 / lpr_of(llpr, targets)))
    for k in range(1, 4):
        updated = lpr_of(refitted(llpr, [boxes[i] for i in choice.chosen[:k]]), targets)
        assert choice.rigidity[k] == pytest.approx(targets_rigidity(1 / updated), rel=1e-7)
    np.testing.assert_allclose(choice.target_rigidity, updated, rtol=1e-7)
    assert np.all(np.diff(choice.rigidity) > 0)


def test_the_first_box_taken_is_the_one_that_raises_the_targets_lpr_the_most(llpr, queue):
    boxes = boxes_of(queue)
    targets = centre_targets(llpr, boxes)
    gains = [targets_rigidity(1 / lpr_of(refitted(llpr, [box]), targets)) for box in boxes]
    choice = choose_by_rigidity(llpr, targets, boxes, n=1)
    assert choice.chosen == [int(np.argmax(gains))]
    assert choice.rigidity[1] == pytest.approx(max(gains), rel=1e-7)
    assert max(gains) > 1.05 * min(gains)  # the boxes differ: the choice means something


def test_choosing_stops_once_the_targets_lpr_passes_the_limit(llpr, queue):
    boxes = boxes_of(queue)
    targets = centre_targets(llpr, boxes)
    free = choose_by_rigidity(llpr, targets, boxes, n=4)
    limit = 0.5 * (free.rigidity[1] + free.rigidity[2])
    limited = choose_by_rigidity(llpr, targets, boxes, n=4, limit=limit)
    assert limited.chosen == free.chosen[:2] and limited.reached_limit
    assert not free.reached_limit
    assert choose_by_rigidity(llpr, targets, boxes, n=4, limit=free.rigidity[0]).chosen == []


def test_the_llpr_itself_is_left_as_it_was(llpr, queue):
    hessian = llpr.hessian.copy()
    boxes = boxes_of(queue)
    before = llpr.atomic_rigidity(boxes[0])
    choose_by_rigidity(llpr, centre_targets(llpr, boxes), boxes, n=2)
    assert np.array_equal(llpr.hessian, hessian)
    assert np.array_equal(llpr.atomic_rigidity(boxes[0]), before)


def test_select_keeps_n_boxes_pending_and_moves_the_others_unchanged_to_skipped(llpr, queue):
    before = {p.name: p.read_bytes() for p in queue.boxes("pending")}
    outcome = select_pending(queue.root, llpr, n=2)
    assert outcome.targets == 4  # one per centre of each frame, whatever the samples
    assert [p.name for p in queue.boxes("pending")] == sorted(outcome.chosen)
    assert [p.name for p in queue.boxes("skipped")] == sorted(outcome.skipped)
    assert sorted(outcome.chosen + outcome.skipped) == sorted(before)
    for path in queue.boxes("pending") + queue.boxes("skipped"):
        assert path.read_bytes() == before[path.name]  # nothing rewritten, nothing deleted
    assert queue.stage_of(outcome.skipped[0]) == "skipped"
    with open(queue.manifest) as handle:
        rows = list(csv.DictReader(handle))
    skipped = {r["box"]: r["detail"] for r in rows if r["event"] == "skipped"}
    assert set(skipped) == set(outcome.skipped)
    assert all("kept 2 of" in detail for detail in skipped.values())
    assert [r["box"] for r in rows if r["event"] == "selected"] == outcome.chosen


def test_an_llpr_of_another_model_is_refused(models, queue):
    other = LastLayerLPR.fit(models["committee"][1], boxes_of(queue)[:2], forces=False,
                             progress=False)
    with pytest.raises(ValueError, match="cu_committee_1.model.*was cut by a run of other "
                                         "models.*cu_committee_0.model"):
        select_pending(queue, other, n=1)
    assert queue.boxes("skipped") == []


def test_an_empty_pool_and_bad_targets_are_refused(llpr, queue, tmp_path):
    with pytest.raises(ValueError, match="no pending boxes to select from"):
        select_pending(tmp_path / "empty", llpr, n=1)
    boxes = boxes_of(queue)
    with pytest.raises(ValueError, match="no candidate structures"):
        choose_by_rigidity(llpr, centre_targets(llpr, boxes), [], n=1)
    with pytest.raises(ValueError, match=r"shape \(T >= 1, 32\)"):
        choose_by_rigidity(llpr, np.ones((2, 5)), boxes, n=1)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        choose_by_rigidity(llpr, centre_targets(llpr, boxes), boxes, n=0)


def test_an_unreadable_box_goes_to_failed_and_the_rest_are_selected(llpr, queue):
    (queue.root / "pending" / "md_step000000099_atom0000001_s00.extxyz").write_text("garbage\n")
    outcome = select_pending(queue, llpr, n=1)
    assert [p.name for p in queue.boxes("failed")] == ["md_step000000099_atom0000001_s00.extxyz"]
    assert len(outcome.chosen) == 1 and len(queue.boxes("pending")) == 1
