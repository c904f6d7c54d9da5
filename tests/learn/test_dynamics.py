"""The MD stage's settings: both engines monitor at the same thresholds, given as local
uncertainties or, with a calibration of any map form, as expected errors."""

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from mdmonitor import Calibration, MonitoredCalculator
from mdmonitor.learn.config import SCHEMA
from mdmonitor.learn.dynamics import input_script, lammps_threshold, monitor_limits
from mdmonitor.quality.calibration import estimator_identity
from mdmonitor.quality.error_maps import ErrorMap, Term

CU, AU = 29, 79


def md(**values):
    return {**{k: d for k, (d, _) in SCHEMA["md"].items()}, "threshold": 0.04, **values}


def calibration(committee, error_map=None):
    """Alpha 2 (error_map None), or the given map, for the bundled committee at 4 A."""
    return Calibration(alpha=2.0, cutoff=4.0, estimator=estimator_identity(committee),
                       n_frames=3, n_atoms=88, mean_error=0.2, mean_uncertainty=0.1,
                       fitted="now", error_map=error_map)


@pytest.fixture
def per_element(committee):
    """Expected error 10 u for Cu, 4 u^2 for Au."""
    return calibration(committee, ErrorMap("element-power", ("committee",), (0.0,),
                                           Term(1.0, (1.0,)), {CU: Term(10.0, (1.0,)),
                                                               AU: Term(4.0, (2.0,))}).to_dict())


def test_the_raw_threshold_is_used_until_there_is_a_calibration_and_an_error_threshold(committee):
    alpha = calibration(committee)
    assert monitor_limits(md(), None) == {"threshold": 0.04, "stop_threshold": None}
    assert monitor_limits(md(error_threshold=0.1), None)["threshold"] == 0.04
    assert monitor_limits(md(), alpha)["threshold"] == 0.04  # no error threshold asked for
    assert lammps_threshold(md(error_threshold=0.1), None, ["Cu"]) == "0.04"
    assert lammps_threshold(md(error_threshold=0.1), alpha, ["Cu", "Au"]) == "0.05"


def test_a_per_element_map_converts_the_error_threshold_for_both_engines(committee, per_element):
    # LAMMPS: one local uncertainty per type, 0.1 / 10 for Cu and sqrt(0.1 / 4) for Au
    assert lammps_threshold(md(error_threshold=0.1), per_element, ["Cu", "Au"]) == \
        f"{0.01:.10g},{np.sqrt(0.025):.10g}"
    # ASE: the monitor compares each atom's expected error with 0.1 eV/A (it refused a
    # calibration of another form than alpha before)
    limits = monitor_limits(md(error_threshold=0.1, stop_threshold=None), per_element)
    calc = MonitoredCalculator(committee, cutoff=4.0, **limits)
    assert calc.watches_error and calc.threshold == 0.1
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.1, seed=1)
    atoms.calc = calc
    atoms.get_forces()
    assert calc.results["expected_error"] == pytest.approx(10 * calc.results["local_uncertainty"])


def test_a_stop_threshold_in_uncertainty_is_refused_beside_a_map_the_ase_monitor_watches(
        per_element, committee):
    with pytest.raises(ValueError, match="md.stop_threshold is a local uncertainty.*"
                                         "element-power.*md.engine = 'lammps'"):
        monitor_limits(md(error_threshold=0.1, stop_threshold=0.5), per_element)
    # with alpha the stop threshold stays a local uncertainty beside the converted threshold
    limits = monitor_limits(md(error_threshold=0.1, stop_threshold=0.5), calibration(committee))
    calc = MonitoredCalculator(committee, cutoff=4.0, **limits)
    assert (calc.threshold, calc.stop_threshold) == (0.05, 0.5)


def test_the_lammps_input_monitors_at_that_threshold_and_extracts_into_the_queue():
    selection = {k: d for k, (d, _) in SCHEMA["selection"].items()}
    script = input_script(md(), "0.05", selection, ["Cu"], 3, "gen000", Path("/q"))
    assert "fix mon all mdmonitor 5 cutoff 4.0 threshold 0.05 extract cube core 4.0 box 10.0 " \
           "queue /q max_boxes 4 cooldown 50 run_id gen000\n" in script
    assert "pair_coeff * * Cu\n" in script and "run 200\n" in script
    assert "fix stop" not in input_script(md(), 0.05, None, ["Cu"], 3, "gen000", Path("/q"))
    assert "v_maxunc > 0.2 error soft" in input_script(md(stop_threshold=0.2), 0.05, None,
                                                        ["Cu"], 3, "gen000", Path("/q"))
