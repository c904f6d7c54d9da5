"""The loop's `pr-guided` strategy: a pool of boxes cut during the MD, the most useful kept."""

import pytest

from mdmonitor import Committee, LastLayerLPR
from mdmonitor.demo import demo_slab
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.learn.config import load_config
from mdmonitor.learn.selection import STRATEGIES, PRGuidedSelection, pool_size
from tests.embedded_boxes import embedded_pool
from tests.learn.test_config import MINIMAL, write  # noqa: F401  (the config-writing fixture)

SELECTION = {"boxes": 2, "box_length": 8.0, "core_radius": 3.0, "max_per_frame": 1,
             "cooldown": 50, "pool": None, "rigidity_limit": None, "box": "cube",
             "frames": "threshold", "centres": None, "molecules": False, "box_fraction": None}


def test_the_md_cuts_a_pool_of_three_boxes_per_box_kept_unless_told(tmp_path):
    strategy = STRATEGIES["pr-guided"]()
    assert strategy.extractor(tmp_path, SELECTION, "gen000", 0, demo_slab()).max_boxes == 6
    assert pool_size({**SELECTION, "pool": 5}) == 5
    assert pool_size({"boxes": 4, "pool": None}) == 12


def test_after_the_md_the_boxes_that_raise_the_targets_lpr_most_stay_pending(models, tmp_path):
    llpr = LastLayerLPR.load(models["llpr"])
    queue = embedded_pool(tmp_path / "candidates", llpr, run_id="gen000")
    cut = len(queue.boxes("pending"))
    change = PRGuidedSelection().after_md(tmp_path / "md.extxyz", queue.root, SELECTION,
                                          "gen000", 0, llpr)
    assert len(queue.boxes("pending")) == 2 and len(queue.boxes("skipped")) == cut - 2
    assert cut + change == 2  # the MD's count of boxes plus this: the boxes kept
    # run again (a restart after the selection): the kept boxes stay, nothing else moves
    again = PRGuidedSelection().after_md(tmp_path / "md.extxyz", queue.root, SELECTION,
                                         "gen000", 0, llpr)
    assert cut + again == 2 and len(queue.boxes("pending")) == 2


def test_a_committee_is_guided_by_the_llpr_of_member_0_on_its_training_set(models, tmp_path,
                                                                          cu_bulk):
    committee = Committee.from_mace(models["committee"][:2])
    queue = embedded_pool(tmp_path / "candidates", committee, run_id="gen000")
    selection = PRGuidedSelection()
    with pytest.raises(ValueError, match="fits the LLPR of member 0: give the members' "
                                         "training set"):
        selection.after_md(tmp_path / "md.extxyz", queue.root, SELECTION, "gen000", 0,
                           committee)
    assert queue.boxes("skipped") == []
    selection.after_md(tmp_path / "md.extxyz", queue.root, {**SELECTION, "boxes": 1}, "gen000",
                       0, committee, training_set=[cu_bulk])
    assert len(queue.boxes("pending")) == 1


def test_no_pool_means_nothing_to_select(models, tmp_path):
    llpr = LastLayerLPR.load(models["llpr"])
    assert PRGuidedSelection().after_md(tmp_path / "md.extxyz", tmp_path / "candidates",
                                        SELECTION, "gen000", 0, llpr) == 0
    CandidateQueue(tmp_path / "candidates")
    assert PRGuidedSelection().after_md(tmp_path / "md.extxyz", tmp_path / "candidates",
                                        SELECTION, "gen000", 0, llpr) == 0


def test_the_config_takes_pr_guided_with_its_pool_and_limit(write):  # noqa: F811
    config = load_config(write(MINIMAL + "[selection]\nstrategy = 'pr-guided'\nboxes = 2\n"
                                         "pool = 5\nrigidity_limit = 800.0\n"))
    assert config["selection"]["strategy"] == "pr-guided"
    assert (config["selection"]["pool"], config["selection"]["rigidity_limit"]) == (5, 800.0)


@pytest.mark.parametrize("text, message", [
    ("[selection]\nboxes = 4\npool = 3\n", "selection.pool = 3 is smaller than "
                                           "selection.boxes = 4"),
    ("[selection]\npool = 0\n", "selection.pool must be a positive integer"),
    ("[selection]\nrigidity_limit = -1.0\n", "selection.rigidity_limit must be"),
])
def test_bad_pool_or_limit_is_refused(write, text, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        load_config(write(MINIMAL + text))


def test_pr_guided_needs_the_ase_engine(write):  # noqa: F811
    text = MINIMAL.replace("[md]\n", "[md]\nengine = 'lammps'\n") + (
        "[selection]\nstrategy = 'pr-guided'\n")
    with pytest.raises(ValueError, match="pr-guided' cuts its pool .* md.engine = 'ase'"):
        load_config(write(text))

