"""UQ metrics: hand-computed cases, an independent library (uncertainty-toolbox), bad input."""

import numpy as np
import pytest
from scipy import optimize, stats

from mdmonitor.quality.metrics import (
    calibrated_nll,
    miscalibration_area,
    pearson,
    roc_auc,
    sharpness,
    sparsification,
    spearman,
)


def gaussian_sample(n, scale=1.0, seed=0):
    """Uncertainties spread over a decade and signed errors drawn from N(0, (scale * sigma)^2)."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.1, 1.0, n)
    return sigma, scale * sigma * rng.standard_normal(n)


# --- correlations -------------------------------------------------------------------------------


def test_correlations_of_a_perfect_and_a_reversed_ranking_are_plus_and_minus_one():
    uncertainty = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert spearman(uncertainty, 2 * uncertainty) == pytest.approx(1.0)
    assert spearman(uncertainty, uncertainty[::-1]) == pytest.approx(-1.0)
    assert pearson(uncertainty, 3 * uncertainty) == pytest.approx(1.0)
    assert pearson(uncertainty, -uncertainty[::-1]) == pytest.approx(-1.0)  # |error| is used


def test_spearman_with_tied_uncertainties_uses_average_ranks_by_hand():
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): sum of products of deviations 4.5, norms^2 4.5 and 5
    assert spearman([1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(np.sqrt(0.9))


def test_pearson_by_hand_and_signed_errors_count_by_magnitude():
    # deviations (-1, 0, 1) and (-1, 1, 0): covariance 1 over norms sqrt(2) * sqrt(2)
    assert pearson([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(0.5)
    assert pearson([1.0, 2.0, 3.0], [-1.0, 3.0, -2.0]) == pytest.approx(0.5)


# --- ROC-AUC ------------------------------------------------------------------------------------


def test_roc_auc_is_one_for_a_perfect_ranking_zero_reversed_and_one_half_without_information():
    error = np.arange(1.0, 11.0)  # 80th percentile 8.2: errors 9 and 10 are high
    assert roc_auc(error / 10, error) == 1.0
    assert roc_auc(error[::-1] / 10, error) == 0.0
    assert roc_auc(np.full(10, 0.3), error) == 0.5


def test_roc_auc_four_points_with_a_tie_by_hand():
    # 50th percentile of the errors is 0.25: samples 2 and 3 are high error (uncertainties 2, 3),
    # samples 0 and 1 low (1, 2). Pairs high > low: (2,1) 1, (2,2) 1/2, (3,1) 1, (3,2) 1 -> 3.5 / 4.
    uncertainty = [1.0, 2.0, 2.0, 3.0]
    error = [0.1, 0.2, 0.3, 0.4]
    assert roc_auc(uncertainty, error, percentile=50) == 0.875


def test_roc_auc_equals_scipy_mann_whitney_u_statistic():
    sigma, error = gaussian_sample(2000, seed=1)
    high = np.abs(error) > np.percentile(np.abs(error), 80)
    u_statistic = stats.mannwhitneyu(sigma[high], sigma[~high]).statistic
    assert roc_auc(sigma, error) == pytest.approx(u_statistic / (high.sum() * (~high).sum()), rel=1e-12)


# --- miscalibration area ------------------------------------------------------------------------


def test_miscalibration_area_with_a_crossing_by_hand():
    # bins=4: expected (0, 1/3, 2/3, 1); z = (0, 0.43, 0.97, inf). Two zero errors and two at
    # 2 sigma: observed (1/2, 1/2, 1/2, 1), gap (1/2, 1/6, -1/6, 0). Under-confident area:
    # (1/2 + 1/6)/2 * 1/3 + (1/3)(1/6)^2 / (2/3) = 1/9 + 1/72 = 1/8; over-confident:
    # 1/72 + (1/6)/2 * 1/3 = 1/24.
    result = miscalibration_area([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, -2.0], bins=4)
    np.testing.assert_allclose(result.observed, [0.5, 0.5, 0.5, 1.0])
    assert result.underconfident == pytest.approx(1 / 8)
    assert result.overconfident == pytest.approx(1 / 24)
    assert result.area == pytest.approx(1 / 6)


def test_miscalibration_area_is_near_zero_for_a_calibrated_gaussian_sample():
    result = miscalibration_area(*gaussian_sample(20_000))
    assert result.area < 0.01


def test_errors_three_times_the_stated_sigma_are_almost_all_overconfident_area():
    result = miscalibration_area(*gaussian_sample(20_000, scale=3.0))
    assert result.overconfident > 0.25
    assert result.underconfident < 0.001
    assert result.area == pytest.approx(result.overconfident + result.underconfident)


def test_errors_a_third_of_the_stated_sigma_are_underconfident():
    result = miscalibration_area(*gaussian_sample(20_000, scale=1 / 3))
    assert result.underconfident > 0.2
    assert result.overconfident < 0.001


def test_a_zero_uncertainty_holds_only_a_zero_error():
    result = miscalibration_area([0.0, 0.0, 1.0], [0.0, 0.1, 0.0], bins=3)
    np.testing.assert_allclose(result.observed, [2 / 3, 2 / 3, 1.0])


# --- calibrated NLL -----------------------------------------------------------------------------


def heteroscedastic_sample(n, a, b, seed=0):
    """sigma and errors drawn from N(0, a sigma^2 + b): the model calibrated_nll fits."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.1, 2.0, n)
    return sigma, np.sqrt(a * sigma**2 + b) * rng.standard_normal(n)


def test_calibrated_nll_recovers_the_variance_model_of_the_data():
    sigma, error = heteroscedastic_sample(100_000, a=2.0, b=0.5)
    result = calibrated_nll(sigma, error)
    assert (result.n_validation, result.n_test) == (20_000, 80_000)
    assert result.a == pytest.approx(2.0, rel=0.05)
    assert result.b == pytest.approx(0.5, rel=0.05)
    # Mean NLL of the true model: E[(ln(2 pi v) + 1) / 2] over the sigmas
    expected = np.mean(0.5 * (np.log(2 * np.pi * (2.0 * sigma**2 + 0.5)) + 1))
    assert result.nll == pytest.approx(expected, abs=0.01)


def test_calibrated_nll_of_a_pure_rescaling_puts_b_at_zero():
    sigma, error = heteroscedastic_sample(50_000, a=4.0, b=0.0, seed=2)
    result = calibrated_nll(sigma, error, validation_fraction=0.5)
    assert result.a == pytest.approx(4.0, rel=0.03)
    assert result.b < 0.01


def test_calibrated_fit_is_the_minimum_of_seed_004_eq_13_found_independently():
    """Nelder-Mead on Eq. 13 written with scipy.stats.norm.logpdf finds no better (a, b)."""
    sigma, error = heteroscedastic_sample(3_000, a=1.5, b=0.2, seed=3)
    result = calibrated_nll(sigma, error, validation_fraction=0.3, seed=7)
    validation = np.random.default_rng(7).permutation(3_000)[: result.n_validation]
    u, e = sigma[validation] ** 2, error[validation]

    def eq_13(params):
        a, b = np.abs(params)  # a, b >= 0
        return -np.sum(stats.norm.logpdf(e, scale=np.sqrt(a * u + b)))

    independent = optimize.minimize(eq_13, x0=[1.0, 1.0], method="Nelder-Mead",
                                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 10_000})
    assert eq_13([result.a, result.b]) <= independent.fun + 1e-8
    np.testing.assert_allclose([result.a, result.b], np.abs(independent.x), rtol=1e-4)


def test_constant_uncertainty_puts_all_the_variance_in_b():
    error = np.random.default_rng(0).normal(size=1000)
    result = calibrated_nll(np.full(1000, 0.3), error, validation_fraction=0.5, seed=1)
    validation = np.random.default_rng(1).permutation(1000)[:500]
    assert result.a == 0.0
    assert result.b == pytest.approx(np.mean(error[validation] ** 2))


# --- sharpness ----------------------------------------------------------------------------------


def test_sharpness_is_the_root_mean_variance():
    assert sharpness([3.0, 4.0]) == pytest.approx(np.sqrt(12.5))
    assert sharpness([0.0, 0.0]) == 0.0


# --- sparsification -----------------------------------------------------------------------------


def test_sparsification_of_a_perfect_ranking_equals_the_oracle():
    sigma, error = gaussian_sample(1000)
    result = sparsification(np.abs(error) * 2 + 1, error)
    np.testing.assert_array_equal(result.curve, result.oracle)
    assert result.area == 0.0
    assert result.fractions[0] == 0.0 and result.fractions[-1] == pytest.approx(0.99)
    assert result.curve[0] == pytest.approx(np.mean(np.abs(error)))


def test_sparsification_of_a_reversed_ranking_by_hand():
    # f = 0, 1/4, 1/2, 3/4 removes 0..3 samples. Largest uncertainty first removes error 1 first:
    # curve (2.5, 3, 3.5, 4); oracle (2.5, 2, 1.5, 1); gaps (0, 1, 2, 3):
    # area = 1/4 * (0.5 + 1.5 + 2.5) / 2.5 = 0.45
    result = sparsification([4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0], steps=4, max_fraction=0.75)
    np.testing.assert_allclose(result.fractions, [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(result.curve, [2.5, 3, 3.5, 4])
    np.testing.assert_allclose(result.oracle, [2.5, 2, 1.5, 1])
    assert result.area == pytest.approx(0.45)


def test_sparsification_breaks_uncertainty_ties_by_their_mean_error_not_by_input_order():
    flat = sparsification(np.full(6, 0.5), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], steps=6, max_fraction=5 / 6)
    np.testing.assert_allclose(flat.curve, 3.5)  # constant uncertainty: random removal on average
    uncertainty = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    error = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    order = np.random.default_rng(0).permutation(6)
    forward, shuffled = sparsification(uncertainty, error), sparsification(uncertainty[order], error[order])
    np.testing.assert_allclose(forward.curve, shuffled.curve)


# --- independent implementation: uncertainty-toolbox --------------------------------------------

# uncertainty-toolbox takes (y_pred, y_std, y_true); we pass y_pred = 0 and y_true = error, so its
# residual is -error and only |error| / y_std enters: the same data, and the same definitions.
SAMPLES = {
    "calibrated": gaussian_sample(5000, seed=11),
    "overconfident x3": gaussian_sample(5000, scale=3.0, seed=12),
    "underconfident x0.4": gaussian_sample(5000, scale=0.4, seed=13),
    "mixed": (np.linspace(0.2, 2.0, 4000), np.linspace(0.2, 2.0, 4000) ** 2
              * np.random.default_rng(14).standard_normal(4000)),
}


@pytest.mark.parametrize("bins", [100, 17])
@pytest.mark.parametrize("name", SAMPLES)
def test_miscalibration_area_agrees_with_uncertainty_toolbox_to_round_off(name, bins):
    import uncertainty_toolbox as uct
    from uncertainty_toolbox.metrics_calibration import get_proportion_lists_vectorized

    sigma, error = SAMPLES[name]
    result = miscalibration_area(sigma, error, bins=bins)
    reference = uct.miscalibration_area(np.zeros_like(error), sigma, error, num_bins=bins)
    assert result.area == pytest.approx(reference, rel=1e-12, abs=1e-15)
    expected, observed = get_proportion_lists_vectorized(np.zeros_like(error), sigma, error, num_bins=bins)
    np.testing.assert_array_equal(result.expected, expected)
    np.testing.assert_array_equal(result.observed, observed)


@pytest.mark.parametrize("name", SAMPLES)
def test_sharpness_agrees_with_uncertainty_toolbox(name):
    import uncertainty_toolbox as uct
    sigma, _ = SAMPLES[name]
    assert sharpness(sigma) == pytest.approx(uct.sharpness(sigma), rel=1e-15)


@pytest.mark.parametrize("name", SAMPLES)
def test_calibrated_nll_agrees_with_uncertainty_toolbox_gaussian_nll_on_the_test_split(name):
    """uncertainty-toolbox has no (a, b) fit: given ours, its mean Gaussian NLL (scaled=True) on
    the test split with y_std = sqrt(a sigma^2 + b) is Eq. 14 divided by the test-set size."""
    import uncertainty_toolbox as uct
    sigma, error = SAMPLES[name]
    result = calibrated_nll(sigma, error, seed=5)
    test = np.random.default_rng(5).permutation(len(error))[result.n_validation:]
    y_std = np.sqrt(result.a * sigma[test] ** 2 + result.b)
    reference = uct.nll_gaussian(np.zeros(len(test)), y_std, error[test], scaled=True)
    assert result.nll == pytest.approx(reference, rel=1e-12)


# --- bad input ----------------------------------------------------------------------------------

PAIR_METRICS = [spearman, pearson, roc_auc, miscalibration_area, calibrated_nll, sparsification]
ALL_METRICS = PAIR_METRICS + [lambda uncertainty, error: sharpness(uncertainty)]
BAD_UNCERTAINTY = {
    "nan": ([1.0, np.nan, 2.0], r"uncertainty\[1\] is nan: all values must be finite"),
    "inf": ([1.0, 2.0, np.inf], r"uncertainty\[2\] is inf: all values must be finite"),
    "negative": ([1.0, -0.5, 2.0], r"uncertainty\[1\] = -0.5 is negative"),
    "one value": ([1.0], "uncertainty needs at least two values, got 1"),
    "2-D": ([[1.0, 2.0, 3.0]], r"uncertainty must be a 1-D array .* got shape \(1, 3\)"),
}


@pytest.mark.parametrize("case", BAD_UNCERTAINTY)
@pytest.mark.parametrize("metric", ALL_METRICS)
def test_bad_uncertainty_raises_a_value_error_naming_it(metric, case):
    uncertainty, message = BAD_UNCERTAINTY[case]
    error = np.ones(np.shape(uncertainty)[-1])
    with pytest.raises(ValueError, match=message):
        metric(uncertainty, error)


@pytest.mark.parametrize("metric", PAIR_METRICS)
def test_bad_error_and_mismatched_lengths_raise_value_errors(metric):
    with pytest.raises(ValueError, match=r"error\[0\] is nan"):
        metric([1.0, 2.0, 3.0], [np.nan, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"error\[2\] is -inf"):
        metric([1.0, 2.0, 3.0], [1.0, 2.0, -np.inf])
    with pytest.raises(ValueError, match="uncertainty has 3 values but error has 4"):
        metric([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="uncertainty needs at least two values, got 0"):
        metric([], [])
    with pytest.raises(ValueError, match="error needs at least two values, got 1"):
        metric([1.0, 2.0], [1.0])


@pytest.mark.parametrize("metric", [spearman, pearson])
def test_correlation_with_a_constant_input_is_undefined(metric):
    with pytest.raises(ValueError, match="uncertainty is constant: correlation undefined"):
        metric([0.5, 0.5, 0.5], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"\|error\| is constant: correlation undefined"):
        metric([0.1, 0.2, 0.3], [1.0, -1.0, 1.0])


def test_metric_specific_arguments_are_checked():
    u, e = [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]
    with pytest.raises(ValueError, match="high-error class is empty"):
        roc_auc(u, [1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"percentile must be in \[0, 100\)"):
        roc_auc(u, e, percentile=100)
    with pytest.raises(ValueError, match="bins must be an integer >= 2"):
        miscalibration_area(u, e, bins=1)
    with pytest.raises(ValueError, match="all validation errors are zero"):
        calibrated_nll(np.linspace(0.1, 1, 10), np.zeros(10))
    with pytest.raises(ValueError, match=r"validation_fraction must be in \(0, 1\)"):
        calibrated_nll(u, e, validation_fraction=1.0)
    with pytest.raises(ValueError, match="gives 1 validation and 3 test samples"):
        calibrated_nll(u, e)  # 0.2 of 4 samples: too few to fit a and b
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        sparsification(u, e, steps=1)
    with pytest.raises(ValueError, match=r"max_fraction must be in \(0, 1\)"):
        sparsification(u, e, max_fraction=1.0)
    with pytest.raises(ValueError, match="error is zero everywhere"):
        sparsification(u, np.zeros(4))
