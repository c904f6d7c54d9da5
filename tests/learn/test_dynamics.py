"""The MD stage's settings: both engines monitor at the same local-uncertainty threshold."""

from pathlib import Path

from mdmonitor.learn.config import SCHEMA
from mdmonitor.learn.dynamics import input_script, local_threshold


class Alpha2:
    def threshold_for(self, error):
        return error / 2.0


def md(**values):
    return {**{k: d for k, (d, _) in SCHEMA["md"].items()}, "threshold": 0.04, **values}


def test_the_calibrated_error_threshold_is_used_once_there_is_a_calibration():
    assert local_threshold(md(), None) == 0.04
    assert local_threshold(md(error_threshold=0.1), None) == 0.04  # not calibrated yet
    assert local_threshold(md(error_threshold=0.1), Alpha2()) == 0.05
    assert local_threshold(md(), Alpha2()) == 0.04  # no error threshold asked for


def test_the_lammps_input_monitors_at_that_threshold_and_extracts_into_the_queue():
    selection = {k: d for k, (d, _) in SCHEMA["selection"].items()}
    script = input_script(md(), 0.05, selection, ["Cu"], 3, "gen000", Path("/q"))
    assert "fix mon all mdmonitor 5 cutoff 4.0 threshold 0.05 extract cube core 4.0 box 10.0 " \
           "queue /q max_boxes 4 cooldown 50 run_id gen000\n" in script
    assert "pair_coeff * * Cu\n" in script and "run 200\n" in script
    assert "fix stop" not in input_script(md(), 0.05, None, ["Cu"], 3, "gen000", Path("/q"))
    assert "v_maxunc > 0.2 error soft" in input_script(md(stop_threshold=0.2), 0.05, None,
                                                        ["Cu"], 3, "gen000", Path("/q"))
