"""MonitoredCalculator given a calibration file follows it: a replaced file is taken up at the
next monitored step and logged; one that cannot serve is refused and the old one kept (issue 25
item 5)."""

import warnings

import numpy as np
import pytest
from ase import units
from ase.md.langevin import Langevin

from mdmonitor import Calibration, MonitoredCalculator, aggregate
from mdmonitor.monitor import CalibrationRefused
from mdmonitor.monitor_log import read_log
from mdmonitor.quality.calibration import FewFramesWarning, predict_labeled
from tests.labeled_frames import cu_frames, labeled_with_error


def fitted(committee, factor, cutoff=4.0, form="alpha"):
    """A calibration of the committee whose labels miss its forces by factor x u_j per atom, so
    that alpha is `factor` exactly."""
    frames = cu_frames()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewFramesWarning)
        labeled = labeled_with_error(frames, [committee.predict(a) for a in frames], factor)
        predictions = predict_labeled(committee, labeled, progress=False)
    return Calibration.from_predictions(committee, predictions, cutoff, form)


@pytest.fixture(scope="module")
def loose(committee):
    return fitted(committee, 0.1)


@pytest.fixture(scope="module")
def strict(committee):
    return fitted(committee, 10.0)


def run(atoms, steps):
    Langevin(atoms, 2 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False,
             rng=np.random.default_rng(1)).run(steps)


def monitored(committee, atoms, path, log, error_threshold):
    atoms.calc = MonitoredCalculator(committee, cutoff=4.0, interval=2, log=log,
                                     calibration=path, error_threshold=error_threshold)
    return atoms.calc


@pytest.mark.filterwarnings("ignore::mdmonitor.quality.calibration.ThresholdRangeWarning")
def test_a_replaced_calibration_file_switches_the_threshold_at_the_next_monitored_step(
        committee, cu_slab, loose, strict, tmp_path):
    assert loose.alpha == pytest.approx(0.1) and strict.alpha == pytest.approx(10.0)
    path, log = tmp_path / "calibration.json", tmp_path / "monitor.csv"
    loose.save(path)
    local = aggregate(cu_slab, committee.predict(cu_slab).atomic_uncertainty, 4.0)
    # an error the loose map reaches at 10 x the slab's largest local uncertainty (never in a
    # few steps at 300 K), the strict one at a tenth of it (on every step)
    error = float(10 * local.max() * loose.alpha)
    calc = monitored(committee, cu_slab, path, log, error)
    run(cu_slab, 3)  # force calls 0-3, monitored 0 and 2
    assert calc.threshold == pytest.approx(error / 0.1)
    strict.save(path)
    run(cu_slab, 3)  # force calls 4-6, monitored 4 and 6
    rows = read_log(log)
    assert [r["step"] for r in rows] == [0, 2, 4, 6]
    assert [r["calibration"] for r in rows] == [loose.digest] * 2 + [strict.digest] * 2
    assert loose.digest != strict.digest
    assert [r["n_above_threshold"] > 0 for r in rows] == [False, False, True, True]
    assert calc.threshold == pytest.approx(error / 10.0)
    assert calc.calibration.digest == strict.digest


@pytest.mark.parametrize("replacement, reason", [
    ("other cutoff", "fitted for local uncertainties within 3 A, but the cutoff here is 4 A"),
    ("torn", "cannot read calibration file"),
    ("other form", "with a calibration of form element-alpha the monitor compares expected "
                   "errors: give error_threshold"),
])
def test_a_replacement_that_cannot_serve_is_refused_with_a_warning_and_the_old_one_kept(
        committee, cu_slab, loose, strict, tmp_path, replacement, reason):
    path, log = tmp_path / "calibration.json", tmp_path / "monitor.csv"
    loose.save(path)
    cu_slab.calc = MonitoredCalculator(committee, cutoff=4.0, interval=2, log=log,
                                       calibration=path, threshold=0.05)  # (a raw threshold)
    run(cu_slab, 1)  # force calls 0, 1
    if replacement == "other cutoff":
        fitted(committee, 10.0, cutoff=3.0).save(path)
    elif replacement == "torn":
        path.write_text(path.read_text()[:100])
    else:
        fitted(committee, 10.0, form="element-alpha").save(path)
    with pytest.warns(CalibrationRefused, match=f"changed, but the monitor cannot use it: "
                                                f".*{reason}.*keeps calibration {loose.digest}"):
        run(cu_slab, 2)  # force call 2 is monitored
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationRefused)  # (refused once, not at every step)
        run(cu_slab, 2)
    assert cu_slab.calc.calibration.digest == loose.digest
    assert cu_slab.calc.threshold == 0.05
    strict.save(path)  # a good file after the bad one is taken up
    run(cu_slab, 3)  # force calls 6-8
    rows = read_log(log)
    assert [r["calibration"] for r in rows] == [loose.digest] * 3 + [strict.digest] * 2
    np.testing.assert_allclose(cu_slab.calc.results["expected_error"],
                               10.0 * cu_slab.calc.results["local_uncertainty"])


def test_without_a_calibration_the_column_is_empty(committee, cu_bulk, tmp_path):
    cu_bulk.calc = MonitoredCalculator(committee, cutoff=4.0, log=tmp_path / "m.csv")
    cu_bulk.get_forces()
    (row,) = read_log(tmp_path / "m.csv")
    assert row["calibration"] == ""
