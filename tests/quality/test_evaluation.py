"""Evaluation report: metrics at every aggregation level, the alpha split, files written."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from mdmonitor.quality.evaluation import FIGURES, evaluate
from mdmonitor.quality.metrics import spearman
from tests.labeled_frames import cu_frames, emt_labeled, labeled_with_error, unranked_errors


@pytest.fixture(scope="module")
def emt_evaluation(committee):
    return evaluate(committee, emt_labeled(cu_frames()), cutoff=4.0, progress=False)


@pytest.fixture(scope="module")
def exact_evaluation(committee):
    """Labels whose error is exactly twice the committee uncertainty, atom by atom."""
    frames = cu_frames()
    labeled = labeled_with_error(frames, [committee.predict(a) for a in frames], 2.0)
    return evaluate(committee, labeled, cutoff=4.0, progress=False)


def test_levels_are_per_atom_one_to_six_angstrom_and_the_structure(emt_evaluation):
    cutoffs = [level.cutoff for level in emt_evaluation.levels]
    assert cutoffs == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, None]
    n_atoms = sum(len(p.atoms) for p in emt_evaluation.predictions)
    assert [len(level.error) for level in emt_evaluation.levels] == [n_atoms] * 7 + [3]


def test_structure_level_compares_frame_means(emt_evaluation):
    structure = emt_evaluation.level(None)
    predictions = emt_evaluation.predictions
    assert structure.error == pytest.approx([p.atomic_error.mean() for p in predictions])
    assert structure.uncertainty == pytest.approx(
        [p.atomic_uncertainty.mean() for p in predictions])


def test_per_atom_error_is_the_mean_absolute_force_component_error(emt_evaluation):
    prediction = emt_evaluation.predictions[0]
    reference = prediction.atoms.arrays["REF_forces"]
    predicted = prediction.force_error + reference
    assert emt_evaluation.level(0.0).error[:len(reference)] == pytest.approx(
        np.abs(predicted - reference).sum(axis=1) / 3)


def test_one_frame_of_three_calibrates_and_alpha_is_fitted_on_it_only(emt_evaluation):
    assert len(emt_evaluation.calibration_frames) == 1  # round(0.2 x 3) = 1
    (frame,) = emt_evaluation.calibration_frames
    prediction = emt_evaluation.predictions[frame]
    for level in emt_evaluation.levels:
        expected = (prediction.local(prediction.atomic_error, level.cutoff).sum()
                    / prediction.local(prediction.atomic_uncertainty, level.cutoff).sum())
        assert level.alpha == pytest.approx(expected)
        assert level.test.sum() == len(level.error) - (1 if level.cutoff is None
                                                       else len(prediction.atoms))


def test_aggregation_raises_the_spearman_correlation_on_the_emt_frames(emt_evaluation):
    per_atom, local = emt_evaluation.level(0.0), emt_evaluation.level(4.0)
    assert local.spearman == pytest.approx(spearman(local.uncertainty, local.error))
    assert local.spearman > per_atom.spearman


def test_an_error_of_exactly_twice_the_uncertainty_gives_perfect_ranking_and_alpha_two(
        exact_evaluation):
    for level in exact_evaluation.levels:
        assert level.alpha == pytest.approx(2.0, rel=1e-12)
        assert level.test_mad == pytest.approx(0.0, abs=1e-14)
        assert level.spearman == pytest.approx(1.0)
        assert level.pearson == pytest.approx(1.0)
        assert level.roc_auc == 1.0
        assert level.sparsification.area == pytest.approx(0.0, abs=1e-12)


def test_gaussian_metrics_of_force_components_of_equal_size_by_hand(exact_evaluation):
    # Every |dF_jk| = 2 u_j and sigma_j = sqrt(pi/2) 2 u_j: all errors sit at z = sqrt(2/pi), so
    # the observed fraction steps from 0 to 1 at p* = 2 Phi(sqrt(2/pi)) - 1. Over-confident
    # area p*^2 / 2 below p*, under-confident (1 - p*)^2 / 2 above (100-point curve: +-0.01).
    p_star = 2 * stats.norm.cdf(math.sqrt(2 / math.pi)) - 1
    gaussian = exact_evaluation.gaussian[0]
    assert gaussian.cutoff == 0.0
    assert gaussian.miscalibration.overconfident == pytest.approx(p_star**2 / 2, abs=0.01)
    assert gaussian.miscalibration.underconfident == pytest.approx((1 - p_star)**2 / 2, abs=0.01)
    test = [p for i, p in enumerate(exact_evaluation.predictions)
            if i not in exact_evaluation.calibration_frames]
    u = np.concatenate([p.atomic_uncertainty for p in test])
    assert gaussian.sharpness == pytest.approx(math.sqrt(math.pi / 2) * 2 * np.sqrt(np.mean(u**2)))


def test_local_gaussian_sigma_uses_the_local_uncertainty_and_its_own_alpha(exact_evaluation):
    evaluation = exact_evaluation
    local = evaluation.gaussian[1]
    assert local.cutoff == evaluation.cutoff
    frames = evaluation.predictions
    u = [p.local(p.atomic_uncertainty, evaluation.cutoff) for p in frames]
    fitting = list(evaluation.calibration_frames)
    alpha = (sum(frames[i].atomic_error.sum() for i in fitting)
             / sum(u[i].sum() for i in fitting))
    test_u = np.concatenate([u[i] for i in range(len(frames)) if i not in fitting])
    assert local.sharpness == pytest.approx(math.sqrt(math.pi / 2) * alpha
                                            * np.sqrt(np.mean(test_u**2)), rel=1e-12)


def test_write_produces_the_report_json_and_small_figures(emt_evaluation, tmp_path):
    files = emt_evaluation.write(tmp_path / "report")
    assert {path.name for path in files} == {"report.md", "report.json", *FIGURES}
    for path in files:
        assert 0 < path.stat().st_size < 200_000
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["frames"] == 3 and report["estimator"]["kind"] == "committee"
    four = next(row for row in report["levels"] if row["level"] == "4 A")
    assert four["spearman"] == pytest.approx(emt_evaluation.level(4.0).spearman)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| 4 A |" in markdown and "![" in markdown


def test_a_constant_expected_error_has_no_correlation_no_best_radius_and_null_in_json(
        committee, tmp_path):
    # issue 25: Spearman nan, "best 1 A" picked from all-NaN values, bare NaN in report.json
    frames = cu_frames()
    labeled = unranked_errors(frames, [committee.predict(atoms) for atoms in frames])
    # (within 2 A the local errors still fall with the local uncertainty: the exponent is 0)
    evaluation = evaluate(committee, labeled, cutoff=2.0, cutoffs=(0.0, 1.0, 2.0),
                          progress=False, form="power")
    assert evaluation.calibrated.constant == ["Cu"]
    assert evaluation.radii and all(math.isnan(v) for v in evaluation.radii.values())
    assert evaluation.best_radius is None
    evaluation.write(tmp_path)
    report = json.loads((tmp_path / "report.json").read_text(),
                        parse_constant=lambda name: pytest.fail(f"{name} in report.json"))
    assert report["best_radius_A"] is None
    assert set(report["held_out_spearman_by_radius"].values()) == {None}
    assert report["calibrated"]["constant_map_elements"] == ["Cu"]
    assert report["calibrated"]["groups"][0]["spearman_expected_error"] is None
    assert report["levels"][0]["spearman"] < 0  # the raw uncertainty still has its (wrong) rank
    markdown = (tmp_path / "report.md").read_text()
    assert "every Cu atom the same expected error (constant map): this signal does not rank " \
           "the errors" in markdown
    assert "No best radius" in markdown and "nan" not in markdown.lower()


def test_the_best_radius_skips_radii_without_a_correlation(emt_evaluation):
    radii = dict(emt_evaluation.radii)
    try:
        emt_evaluation.radii = {1.0: float("nan"), 2.0: 0.3, 3.0: 0.5, 4.0: float("nan")}
        assert emt_evaluation.best_radius == 3.0
    finally:
        emt_evaluation.radii = radii


def test_llpr_is_evaluated_in_its_own_unit(llpr):
    evaluation = evaluate(llpr, emt_labeled(cu_frames()), cutoff=3.5, progress=False)
    assert evaluation.unit == "1/sqrt(LPR)"
    assert 3.5 in [level.cutoff for level in evaluation.levels]
    assert evaluation.level(3.5).alpha > 0


@pytest.mark.parametrize("options, message", [
    ({"cutoff": 0.0}, "cutoff must be a positive distance"),
    ({"calibration_fraction": 1.0}, "calibration_fraction must be in"),
    ({"cutoffs": (-1.0, 2.0)}, "aggregation cutoffs must be >= 0"),
])
def test_bad_options_are_refused(committee, options, message):
    with pytest.raises(ValueError, match=message):
        evaluate(committee, emt_labeled(cu_frames()), progress=False, **options)
