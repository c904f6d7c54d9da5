"""`mdmonitor md --calibration FILE`: thresholds as expected force errors (eV/A) through a
calibration of any map form, converted per element (issue 25: md took raw thresholds only)."""

import ase.io
import numpy as np
import pytest

from mdmonitor import Calibration, aggregate
from mdmonitor.cli import main
from mdmonitor.monitor_log import read_log
from tests.labeled_frames import cu_frames, emt_labeled


@pytest.fixture(scope="module")
def element_power(llpr, tmp_path_factory):
    """An element-power calibration of the bundled LLPR at 4 A and its file."""
    with pytest.warns(UserWarning, match="only 3 labelled frames"):
        calibration = Calibration.fit(llpr, emt_labeled(cu_frames()), cutoff=4.0,
                                      progress=False, form="element-power")
    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    calibration.save(path)
    return calibration, path


def md_command(models, start, tmp_path, *options):
    return ["md", str(start), "--llpr", models["llpr"], "--steps", "0",
            "--log", str(tmp_path / "monitor.csv"), "--trajectory", str(tmp_path / "t.extxyz"),
            *options]


def test_md_triggers_on_the_expected_error_of_a_per_element_map(models, llpr, element_power,
                                                                 cu_bulk, tmp_path, capsys):
    calibration, path = element_power
    ase.io.write(tmp_path / "start.extxyz", cu_bulk)
    local = aggregate(cu_bulk, llpr.predict(cu_bulk).atomic_uncertainty, 4.0)
    expected = calibration.expected_error(local[:, None], cu_bulk.numbers)
    threshold = float(np.median(expected))
    assert main(md_command(models, tmp_path / "start.extxyz", tmp_path, "--calibration",
                           str(path), "--error-threshold", repr(threshold))) == 0
    (row,) = read_log(tmp_path / "monitor.csv")
    assert row["n_above_threshold"] == np.sum(expected > threshold) > 0
    limit = calibration.uncertainty_limits(threshold, ["Cu"])["Cu"]
    # the limit is the local uncertainty whose expected error is the threshold
    assert calibration.expected_error([[limit]], [29]) == pytest.approx([threshold])
    assert (f"--error-threshold {threshold:g} eV/A: local uncertainty {limit:.4g} (Cu) "
            "(element-power map)") in capsys.readouterr().out


def test_error_thresholds_need_a_calibration_and_a_map_takes_no_raw_threshold(
        models, element_power, cu_bulk, tmp_path, capsys):
    ase.io.write(tmp_path / "start.extxyz", cu_bulk)
    start = tmp_path / "start.extxyz"
    assert main(md_command(models, start, tmp_path, "--error-threshold", "0.1")) == 1
    assert ("--error-threshold (an expected force error in eV/A) needs --calibration FILE"
            in capsys.readouterr().err)
    assert main(md_command(models, start, tmp_path, "--calibration", str(element_power[1]),
                           "--threshold", "0.01")) == 1
    assert ("with a calibration of form element-power the monitor compares expected errors: "
            "instead of --threshold (local uncertainties), give --error-threshold"
            in capsys.readouterr().err)
    assert not (tmp_path / "monitor.csv").exists()
