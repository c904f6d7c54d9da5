"""A restarted monitored MD (same seed, settings and run_id) cuts exactly the boxes of an
uninterrupted run, also when max_boxes is set and a frame gives several centres."""

import pytest

from mdmonitor import MonitoredCalculator
from mdmonitor.demo import demo_slab
from mdmonitor.extraction.candidates import STAGES, CandidateQueue
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.md import run_md

STEPS = 20
# On this trajectory the uninterrupted run cuts two boxes at step 0, two at step 1 and its fifth
# and last at step 10; a run stopped after step 1 has four, so a restart has a budget of one box
# left but must still let both centres of steps 0 and 1 into the cool-down.
MAX_BOXES = 5


class PowerCut(Exception):
    """Stands for a kill of the MD process."""


def monitored_md(llpr, queue, steps):
    extractor = Extractor("cluster", queue=queue, core_radius=3.0, max_per_frame=2,
                          max_boxes=MAX_BOXES, cooldown=10)
    calc = MonitoredCalculator(llpr, cutoff=4.0, threshold=0.04, extractor=extractor)
    run_md(demo_slab(), calc, steps=steps, temperature_K=600, timestep_fs=2.0, seed=1,
           progress=False)
    return extractor


def box_files(queue):
    """{box name: file text} of every box in the queue."""
    return {p.name: p.read_text() for stage in STAGES for p in CandidateQueue(queue).boxes(stage)}


@pytest.fixture(scope="module")
def uninterrupted(llpr, tmp_path_factory):
    queue = tmp_path_factory.mktemp("uninterrupted")
    monitored_md(llpr, queue, STEPS)
    boxes = box_files(queue)
    steps = sorted(int(name.split("_step")[1][:9]) for name in boxes)
    assert steps == [0, 0, 1, 1, 10]  # the situation this test is about
    return boxes


def test_a_run_stopped_after_a_frame_and_restarted_cuts_the_uninterrupted_boxes(
        llpr, uninterrupted, tmp_path):
    monitored_md(llpr, tmp_path, steps=1)  # killed after the boxes of step 1
    assert len(box_files(tmp_path)) == MAX_BOXES - 1
    restarted = monitored_md(llpr, tmp_path, STEPS)
    assert box_files(tmp_path) == uninterrupted
    assert restarted.boxes_written == MAX_BOXES


def test_a_run_cut_off_between_two_boxes_of_a_frame_restarts_to_the_same_boxes(
        llpr, uninterrupted, tmp_path, monkeypatch):
    write = CandidateQueue.write

    def power_cut_at_the_fourth_box(queue, box, name, *args, **kwargs):
        if len(box_files(queue.root)) == 3:
            raise PowerCut
        return write(queue, box, name, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(CandidateQueue, "write", power_cut_at_the_fourth_box)
        with pytest.raises(PowerCut):
            monitored_md(llpr, tmp_path, STEPS)
    assert len(box_files(tmp_path)) == 3
    monitored_md(llpr, tmp_path, STEPS)
    assert box_files(tmp_path) == uninterrupted
