"""Calibration: alpha of seed 002 Eq. 3 on labelled frames, its JSON file, and clear errors."""

import json
import shutil
import warnings

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from mdmonitor import Calibration, Committee, aggregate
from mdmonitor.quality.calibration import (
    ConstantMapWarning,
    ThresholdRangeWarning,
    estimator_identity,
    fit_alpha,
)
from mdmonitor.quality.error_maps import ErrorMap, Term
from tests.labeled_frames import cu_frames, emt_labeled, labeled_with_error, unranked_errors


@pytest.fixture(scope="module")
def emt_frames():
    return emt_labeled(cu_frames())


@pytest.fixture(scope="module")
def predictions(committee):
    """The committee's predictions of cu_frames()."""
    return [committee.predict(atoms) for atoms in cu_frames()]


@pytest.fixture(scope="module")
def fitted(committee, emt_frames):
    return Calibration.fit(committee, emt_frames, cutoff=4.0, progress=False, form="alpha")


# --- alpha ---------------------------------------------------------------------------------------


def test_alpha_is_the_ratio_of_mean_error_to_mean_uncertainty_by_hand():
    # Eq. 3: mean |error| = alpha x mean uncertainty, a ratio of means (the mean of the
    # ratios 1/3 and 3 would be 5/3)
    assert fit_alpha([0.1, 0.3], [0.3, 0.1]) == pytest.approx(1.0)
    assert fit_alpha([1.0, 2.0, 6.0], [1.0, 1.0, 1.5]) == pytest.approx(9.0 / 3.5)


def test_alpha_is_recovered_exactly_when_every_error_is_twice_the_uncertainty(committee,
                                                                               predictions):
    frames = labeled_with_error(cu_frames(), predictions, 2.0)
    calibration = Calibration.fit(committee, frames, cutoff=4.0, progress=False)
    assert calibration.alpha == pytest.approx(2.0, rel=1e-12)
    assert (calibration.n_frames, calibration.n_atoms) == (3, 32 + 24 + 32)
    assert calibration.mean_error == pytest.approx(2.0 * calibration.mean_uncertainty)


def test_alpha_is_fitted_on_the_locally_aggregated_values(committee, predictions):
    frames = cu_frames()
    # c_j = 1 for the first atom of each frame, 5 for all others: the first atom and its
    # neighbours weigh more in the local sums than in the per-atom ones
    factors = [np.where(np.arange(len(atoms)) == 0, 1.0, 5.0) for atoms in frames]
    labeled = labeled_with_error(frames, predictions, factors)
    calibration = Calibration.fit(committee, labeled, cutoff=3.0, progress=False)

    u = [p.atomic_uncertainty for p in predictions]
    local_e = sum(aggregate(a, c * uj, 3.0).sum() for a, c, uj in zip(frames, factors, u))
    local_u = sum(aggregate(a, uj, 3.0).sum() for a, uj in zip(frames, u))
    atomic_ratio = sum((c * uj).sum() for c, uj in zip(factors, u)) / sum(uj.sum() for uj in u)
    assert calibration.alpha == pytest.approx(local_e / local_u, rel=1e-10)
    assert calibration.alpha != pytest.approx(atomic_ratio, rel=1e-3)


# --- the calibration file and its use ------------------------------------------------------------


def test_calibration_round_trips_through_json_and_converts_errors_and_thresholds(fitted,
                                                                                   tmp_path):
    path = tmp_path / "alpha.json"
    fitted.save(path)
    assert Calibration.load(path) == fitted
    document = json.loads(path.read_text())
    assert document["alpha"] == fitted.alpha and document["cutoff"] == 4.0
    assert "|F_jk - F_jk^ref|" in document["error"]
    assert 0.5 < fitted.alpha < 5.0  # EMT errors of a bulk-trained model, a few times the spread
    assert fitted.expected_error([0.01, 0.02]) == pytest.approx([0.01 * fitted.alpha,
                                                                 0.02 * fitted.alpha])
    assert fitted.threshold_for(0.1) * fitted.alpha == pytest.approx(0.1)


def test_check_accepts_the_estimator_and_cutoff_it_was_fitted_for(fitted, committee):
    fitted.check(committee, 4.0)


def test_check_refuses_another_estimator_or_cutoff(fitted, llpr, committee):
    with pytest.raises(ValueError, match="fitted for the committee of cu_committee_0.model .*"
                                         "not for the last-layer LPR of cu_committee_0.model"):
        fitted.check(llpr, 4.0)
    with pytest.raises(ValueError, match="fitted for local uncertainties within 4 A, but the "
                                         "cutoff here is 5 A"):
        fitted.check(committee, 5.0)
    three = Committee(models=committee.models[:3])
    with pytest.raises(ValueError, match="not for the committee of"):
        fitted.check(three, 4.0)


def test_check_refuses_an_llpr_with_another_matrix_and_accepts_a_renamed_model(llpr, models,
                                                                              tmp_path):
    from mdmonitor import LastLayerLPR

    calibration = Calibration(alpha=1.0, cutoff=4.0, estimator=estimator_identity(llpr),
                              n_frames=2, n_atoms=10, mean_error=0.1, mean_uncertainty=0.1,
                              fitted="2024-01-01T00:00:00+00:00")
    renamed = tmp_path / "renamed.model"
    shutil.copyfile(models["committee"][0], renamed)
    same = LastLayerLPR(renamed, llpr.hessian, llpr.regularizer, llpr.forces)
    calibration.check(same, 4.0)
    rescaled = LastLayerLPR(renamed, llpr.hessian, llpr.regularizer, llpr.forces, scale=2.0)
    with pytest.raises(ValueError, match="Gauss-Newton matrix"):
        calibration.check(rescaled, 4.0)


# --- maps that cannot rank, thresholds outside what calibration saw ---------------------------------


def test_a_map_fitted_to_errors_the_signal_does_not_rank_is_reported_constant(committee,
                                                                             predictions, fitted):
    # e_j = 0.0005 / u_j: the least-squares exponent is held at 0 (issue 25: 3.4e-20, silent)
    frames = unranked_errors(cu_frames(), predictions)
    with pytest.warns(ConstantMapWarning, match="this signal does not rank the errors; the map "
                                                "is constant: the power map gives every Cu atom "
                                                "the same expected error"):
        constant = Calibration.fit(committee, frames, cutoff=4.0, progress=False, form="power")
    assert constant.map.pooled.exponents[0] < 1e-9
    assert constant.constant == ["Cu"]
    low, high = constant.expected_error_range["Cu"]
    assert high == pytest.approx(low, rel=1e-9) and low == pytest.approx(constant.mean_error)
    assert fitted.constant == []  # the alpha map of the EMT errors ranks them


def test_thresholds_outside_the_expected_errors_seen_in_calibration_are_warned_about(
        fitted, predictions):
    local = np.concatenate([aggregate(atoms, p.atomic_uncertainty, 4.0)
                            for atoms, p in zip(cu_frames(), predictions)])
    low, high = fitted.expected_error_range["Cu"]
    assert (low, high) == pytest.approx((fitted.alpha * local.min(), fitted.alpha * local.max()))
    with pytest.warns(ThresholdRangeWarning, match=r"below the .* eV/A the alpha map gave the "
                                                   r"Cu atoms of the 3 calibration frames: it "
                                                   r"fires on every Cu atom"):
        fitted.threshold_for(low / 2)
    with pytest.warns(ThresholdRangeWarning, match="above .* none of them reached it"):
        assert fitted.lammps_threshold(2 * high, ["Cu"]) == f"{2 * high / fitted.alpha:.10g}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fitted.threshold_for((low + high) / 2) == pytest.approx(
            (low + high) / 2 / fitted.alpha)


def test_lammps_thresholds_of_a_constant_map_are_written_without_overflow(committee):
    # issue 25: exponent 3.4e-20, lammps_threshold(0.1, ["Cu", "Au"]) raised OverflowError
    error_map = ErrorMap("power", ("committee",), (1e-4,), Term(0.03, (3.4e-20,)), {})
    calibration = Calibration(alpha=1.0, cutoff=4.0, estimator=estimator_identity(committee),
                              n_frames=8, n_atoms=800, mean_error=0.03, mean_uncertainty=0.03,
                              fitted="now", error_map=error_map.to_dict(),
                              expected_error_range={"Cu": [0.03, 0.03], "Au": [0.03, 0.03]},
                              constant=["Cu", "Au"])
    with pytest.warns(ThresholdRangeWarning, match="above the 0.03 eV/A the power map gave the "
                                                   "Au atoms"):
        assert calibration.lammps_threshold(0.1, ["Cu", "Au"]) == "1e+300,1e+300"  # never
    with pytest.warns(ThresholdRangeWarning, match="fires on every Cu atom"):
        assert calibration.lammps_threshold(0.01, ["Cu", "Au"]) == "0.0001,0.0001"  # always


# --- bad input -----------------------------------------------------------------------------------


def test_unlabeled_frames_are_refused_before_any_prediction(committee, emt_frames):
    frames = [emt_frames[0], cu_frames()[1]]
    with pytest.raises(ValueError, match="frame 1 has no reference forces: looked for "
                                         "'REF_forces', 'forces'.*--forces-key"):
        Calibration.fit(committee, frames, cutoff=4.0, progress=False)
    with pytest.raises(ValueError, match="frame 0 has no reference forces: looked for 'DFT'"):
        Calibration.fit(committee, emt_frames, cutoff=4.0, forces_key="DFT", progress=False)


def test_labels_with_another_atom_count_are_refused(committee, emt_frames):
    atoms = cu_frames()[0]
    atoms.calc = SinglePointCalculator(atoms, forces=np.zeros((len(atoms) - 1, 3)))
    with pytest.raises(ValueError, match=r"frame 1: reference forces 'forces' have shape "
                                         r"\(31, 3\) but the frame has 32 atoms"):
        Calibration.fit(committee, [emt_frames[0], atoms], cutoff=4.0, progress=False)


def test_fewer_than_two_frames_are_refused(committee, emt_frames):
    with pytest.raises(ValueError, match="need at least two labelled frames, got 1"):
        Calibration.fit(committee, emt_frames[:1], cutoff=4.0, progress=False)


def test_constant_uncertainty_is_refused(committee, emt_frames):
    twins = Committee(models=[committee.models[0]] * 2)  # zero spread everywhere
    with pytest.raises(ValueError, match="the uncertainty is 0 for every atom of every frame"):
        Calibration.fit(twins, emt_frames[:2], cutoff=4.0, progress=False)


def test_model_forces_as_labels_are_refused(committee, predictions, tmp_path):
    frames = cu_frames()
    for atoms, prediction in zip(frames, predictions):  # as `mdmonitor md` writes its frames
        atoms.arrays["forces"] = prediction.forces
    ase.io.write(tmp_path / "trajectory.extxyz", frames, format="extxyz")
    with pytest.raises(ValueError, match="labels are the model's own forces"):
        Calibration.fit(committee, tmp_path / "trajectory.extxyz", cutoff=4.0, progress=False)
    with pytest.raises(ValueError, match="needs both positive, got 0 / 0.3"):
        fit_alpha([0.0, 0.0], [0.1, 0.2])


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan")])
def test_a_non_positive_cutoff_is_refused(committee, emt_frames, cutoff):
    with pytest.raises(ValueError, match="cutoff must be a positive distance"):
        Calibration.fit(committee, emt_frames, cutoff=cutoff, progress=False)


def test_bad_calibration_files_are_refused(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="calibration file .* does not exist"):
        Calibration.load(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"alpha": 1.0}')
    with pytest.raises(ValueError, match="not an mdmonitor calibration file"):
        Calibration.load(tmp_path / "other.json")
    fitted.save(tmp_path / "alpha.json")
    document = json.loads((tmp_path / "alpha.json").read_text())
    (tmp_path / "v9.json").write_text(json.dumps({**document, "format_version": 9}))
    with pytest.raises(ValueError, match="format version 9"):
        Calibration.load(tmp_path / "v9.json")
    (tmp_path / "negative.json").write_text(json.dumps({**document, "alpha": -1.0}))
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        Calibration.load(tmp_path / "negative.json")
    with pytest.raises(ValueError, match="positive force error in eV/A"):
        fitted.threshold_for(0.0)
