"""Calibration input that would give nonsense is refused by name: a tampered calibration file,
the forces of a monitored MD taken as labels, and too few frames get a warning."""

import json

import pytest

from mdmonitor import Calibration
from mdmonitor.md import run_md
from mdmonitor.monitor import MonitoredCalculator
from mdmonitor.quality.calibration import RELIABLE_FRAMES, FewFramesWarning
from mdmonitor.quality.evaluation import evaluate
from tests.labeled_frames import cu_frames, emt_labeled

GOOD = {"format": "mdmonitor-calibration", "format_version": 1, "alpha": 2.0, "cutoff": 4.0,
        "estimator": {"kind": "committee", "members": ["a", "b"]}, "n_frames": 3,
        "n_atoms": 88, "mean_error": 0.1, "mean_uncertainty": 0.05,
        "fitted": "2024-01-01T00:00:00+00:00", "source": None}


@pytest.mark.parametrize("field, value, message", [
    ("alpha", 1e-30, r"alpha 1e-30 is not mean_error / mean_uncertainty = 0.1 / 0.05 = 2.0"),
    ("cutoff", "4.0", (r"cutoff must be a positive distance in A \(the monitor's aggregation "
                       r"radius\), got '4.0'")),
    ("cutoff", 1e-200, "cutoff must be at least 1e-06 A, got 1e-200"),
    ("mean_uncertainty", 0.0, "mean_uncertainty must be a positive number"),
    ("n_frames", -3, "n_frames must be a positive integer, got -3"),
    ("n_atoms", "88", "n_atoms must be a positive integer, got '88'"),
    ("estimator", "committee", "estimator must be an estimator identity with a 'kind'"),
    ("fitted", 2024, "fitted must be a string, got 2024"),
])
def test_a_tampered_field_is_refused_naming_file_and_field(tmp_path, field, value, message):
    path = tmp_path / "alpha.json"
    path.write_text(json.dumps(GOOD))
    assert Calibration.load(path).alpha == 2.0
    path.write_text(json.dumps({**GOOD, field: value}))
    with pytest.raises(ValueError, match=rf"calibration file '{path}': {message}"):
        Calibration.load(path)


def test_a_format_version_of_another_type_says_so(tmp_path):
    """It said "version 1, this mdmonitor reads version 1" for the string "1"."""
    path = tmp_path / "alpha.json"
    path.write_text(json.dumps({**GOOD, "format_version": "1"}))
    with pytest.raises(ValueError, match=r"format version '1' \(a str\), this mdmonitor reads "
                                         r"format versions 1, 2 \(an integer\)"):
        Calibration.load(path)


def test_a_trajectory_of_a_committee_driven_md_is_refused_as_labels_for_the_llpr(
        committee, llpr, cu_bulk, tmp_path):
    """Its forces are the committee mean: not the LLPR model's own forces, so the check that
    refused them for the committee (every error below 1e-6 eV/A) let them through."""
    trajectory = tmp_path / "trajectory.extxyz"
    run_md(cu_bulk, MonitoredCalculator(committee, cutoff=4.0), steps=2, temperature_K=300.0,
           trajectory=trajectory, frame_interval=1, progress=False)
    for estimator in (llpr, committee):
        with pytest.raises(ValueError, match="frame 0: its labels are the 'forces' that "
                                             "`mdmonitor md` wrote beside its atomic_uncertainty "
                                             "column"):
            Calibration.fit(estimator, trajectory, cutoff=4.0, progress=False)


def test_frames_with_reference_labels_beside_the_monitor_columns_are_accepted(committee, llpr,
                                                                              cu_bulk, tmp_path):
    frames = emt_labeled(cu_frames())
    for atoms in frames:  # as if labeled afterwards: REF_forces are looked for first
        atoms.arrays["atomic_uncertainty"] = committee.predict(atoms).atomic_uncertainty
    with pytest.warns(FewFramesWarning):
        assert Calibration.fit(llpr, frames, cutoff=4.0, progress=False).n_frames == 3


def test_fewer_than_the_reliable_count_of_frames_gives_a_warning(committee):
    frames = emt_labeled(cu_frames())
    message = rf"only 3 labelled frames: alpha and the correlations .* below {RELIABLE_FRAMES}"
    with pytest.warns(FewFramesWarning, match=message):
        Calibration.fit(committee, frames, cutoff=4.0, progress=False)
    with pytest.warns(FewFramesWarning, match=message):
        evaluate(committee, frames, cutoffs=(0.0,), progress=False)
