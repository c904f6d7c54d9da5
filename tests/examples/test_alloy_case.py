"""The fixed Ag-Pd calibration case (examples/alloy/data, scripts/train_alloy_models.py) is
complete and loads: three Ag-Pd members, LLPR and GMM files of member 0, labelled test frames of
five conditions that the committee predicts with its measured accuracy."""

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from mdmonitor import Committee, LastLayerLPR, LatentGMM

DATA = Path(__file__).parents[2] / "examples" / "alloy" / "data"
MEMBERS = [DATA / f"agpd_committee_{k}.model" for k in range(3)]
CONDITIONS = ("bulk_ag30_hot", "bulk_ag70_hot", "slab_100", "slab_111", "defects")
AG, PD = 47, 46
# committee-mean force MAE (eV/A) on the first frame of each condition: 3x the measured value
# (measured with the shipped models: see docs/notes/alloy_case.md)
MAE_BOUND = {
    "bulk_ag30_hot": 3 * 0.048,
    "bulk_ag70_hot": 3 * 0.051,
    "slab_100": 3 * 0.094,
    "slab_111": 3 * 0.072,
    "defects": 3 * 0.061,
}


@pytest.fixture(scope="module")
def committee():
    return Committee.from_mace(MEMBERS)


@pytest.fixture(scope="module")
def test_frames():
    return ase.io.read(DATA / "alloy_test.extxyz", ":")


def test_files_are_there_and_small():
    names = [p.name for p in MEMBERS] + ["agpd_llpr.npz", "agpd_gmm.npz", "agpd_train.extxyz",
                                         "agpd_valid.extxyz", "alloy_test.extxyz"]
    for name in names:
        assert (DATA / name).stat().st_size < 1_000_000, name


def test_committee_has_three_ag_pd_members(committee):
    assert len(committee) == 3
    for model in committee.models:
        assert model.elements == (PD, AG)


def test_estimator_files_belong_to_member_0():
    llpr = LastLayerLPR.load(DATA / "agpd_llpr.npz", MEMBERS[0])
    gmm = LatentGMM.load(DATA / "agpd_gmm.npz", MEMBERS[0])
    assert llpr.model.name == gmm.model.name == MEMBERS[0].name
    assert sorted(gmm.mixtures) == [PD, AG]
    with pytest.raises(ValueError, match="fitted for another model"):
        LastLayerLPR.load(DATA / "agpd_llpr.npz", MEMBERS[1])


def test_training_data_is_bulk_ag_pd():
    for name in ("agpd_train.extxyz", "agpd_valid.extxyz"):
        frames = ase.io.read(DATA / name, ":")
        assert all(frame.pbc.all() for frame in frames)
        numbers = np.concatenate([frame.numbers for frame in frames])
        assert set(numbers) == {AG, PD}
        for frame in frames:
            assert 0.15 < np.mean(frame.numbers == AG) < 0.85
            assert frame.arrays["REF_forces"].shape == (len(frame), 3)


def test_test_frames_have_every_condition_with_labels(test_frames):
    conditions = [frame.info["config_type"] for frame in test_frames]
    assert set(conditions) == set(CONDITIONS)
    for condition in CONDITIONS:
        assert 20 <= conditions.count(condition) <= 30
    for frame in test_frames:
        assert 32 <= len(frame) <= 150
        assert np.isfinite(frame.arrays["REF_forces"]).all()
        assert frame.arrays["REF_forces"].shape == (len(frame), 3)
    slabs = [frame for frame in test_frames if frame.info["config_type"].startswith("slab")]
    assert all(list(frame.pbc) == [True, True, False] for frame in slabs)


def test_every_defect_frame_has_a_defect(test_frames):
    """An atom without 12 neighbours within 3.35 A (between the first and second fcc shells):
    the vacancy and the interstitial have not recombined into a perfect lattice."""
    for frame in test_frames:
        if frame.info["config_type"] == "defects":
            coordination = np.bincount(neighbor_list("i", frame, 3.35), minlength=len(frame))
            assert (coordination != 12).any()


@pytest.mark.parametrize("condition", CONDITIONS)
def test_committee_predicts_each_condition(committee, test_frames, condition):
    frame = next(f for f in test_frames if f.info["config_type"] == condition)
    forces = committee.predict(frame).forces
    assert np.isfinite(forces).all()
    mae = np.abs(forces - frame.arrays["REF_forces"]).mean()
    assert mae < MAE_BOUND[condition], f"{condition}: force MAE {mae:.4f} eV/A"


def test_evaluate_reports_both_elements_every_condition_and_each_left_out(test_frames):
    """Two frames of each condition through `evaluate` with member 0's GMM: the calibrated
    expected error is checked per element and per condition, and every condition is left out
    once; on each left-out condition the map (fitted without it) has a positive mean."""
    from mdmonitor.quality.evaluation import evaluate

    frames = [f for c in CONDITIONS for f in
              [a for a in test_frames if a.info["config_type"] == c][:2]]
    gmm = LatentGMM.load(DATA / "agpd_gmm.npz", MEMBERS[0])
    with pytest.warns(UserWarning, match="only 10 labelled frames"):
        evaluation = evaluate(gmm, frames, cutoff=4.0, cutoffs=(0.0, 4.0), progress=False,
                              form="element-alpha")
    names = {(g.kind, g.name) for g in evaluation.calibrated.groups}
    assert {("element", "Ag"), ("element", "Pd")} <= names
    assert {c for kind, c in names if kind == "condition"} <= set(CONDITIONS)
    assert [t.condition for t in evaluation.transfer] == sorted(CONDITIONS)
    assert all(t.frames == 2 and t.groups[0].mean_expected_error > 0
               for t in evaluation.transfer)
    assert set(evaluation.radii) == {4.0}
