"""How good is an uncertainty as a predictor of the error? Plain functions on 1-D arrays.

Conventions shared by every function:

- ``uncertainty`` is a standard deviation in the units of the error (e.g. a committee force std in
  eV/A, Heid et al. 2024 Eq. 6), one value per sample, finite and >= 0;
- ``error`` is the signed residual (prediction - reference) or its absolute value, one per sample;
  only ``|error|`` enters any metric, so both give the same result;
- at least two samples; a ValueError names the problem (lengths, the first non-finite index, a
  negative uncertainty, a constant input where the metric is undefined).

Sources: Tan et al. 2023 (seed 004) Sec. 2.3 for Spearman, ROC-AUC, miscalibration area and the
calibrated NLL (Eqs. 13-14); Vita et al. (LTAU-FF, seed 003) Sec. 4.1 for Pearson, the over/under-
confident split of the miscalibration area and sharpness; Heid et al. 2024 (seed 002) Fig. 2 for
sparsification curves.
"""

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

__all__ = ["CalibratedNLL", "Miscalibration", "Sparsification", "calibrated_nll",
           "miscalibration_area", "pearson", "roc_auc", "sharpness", "sparsification", "spearman"]


def spearman(uncertainty, error):
    """Spearman rank correlation between uncertainty and |error| (seed 004 Eq. 12).

    Ties get average ranks (scipy.stats.spearmanr).
    """
    uncertainty, error = _validated(uncertainty, error)
    _require_varying(uncertainty, error, "correlation")
    return float(stats.spearmanr(uncertainty, error).statistic)


def pearson(uncertainty, error):
    """Pearson (linear) correlation between uncertainty and |error| (C_P of seed 003 Table 1)."""
    uncertainty, error = _validated(uncertainty, error)
    _require_varying(uncertainty, error, "correlation")
    return float(stats.pearsonr(uncertainty, error).statistic)


def roc_auc(uncertainty, error, percentile=80.0):
    """Area under the ROC curve of the uncertainty as a classifier of "high error" (seed 004 Sec. 2.3).

    A sample is high-error when |error| is strictly above ``np.percentile(|error|, percentile)``;
    the default 80 labels the largest 20 % of the errors high. (Seed 004 sets its threshold "at
    the 20th percentile of the error distribution" and shows the AUC barely changes between that
    and the 50th, Table S2.) The AUC is the Mann-Whitney probability that a random high-error
    sample has a larger uncertainty than a random low-error one, ties counted 1/2:
    (sum of the average ranks of the high-error uncertainties - n1 (n1 + 1) / 2) / (n1 n0).
    1 is a perfect ranking, 0.5 no information (e.g. constant uncertainty), 0 a reversed one.
    """
    uncertainty, error = _validated(uncertainty, error)
    if not 0.0 <= percentile < 100.0:
        raise ValueError(f"percentile must be in [0, 100), got {percentile!r}")
    high = error > np.percentile(error, percentile)
    n_high = int(high.sum())
    n_low = len(error) - n_high
    if n_high == 0:
        raise ValueError(
            f"no error is above its {percentile:g}th percentile (all errors equal?): "
            "the high-error class is empty and ROC-AUC is undefined"
        )
    ranks = stats.rankdata(uncertainty)  # ties share their average rank
    return float((ranks[high].sum() - n_high * (n_high + 1) / 2) / (n_high * n_low))


@dataclass(frozen=True)
class Miscalibration:
    """Miscalibration area and its split (seed 003 Table 1: |A| = A+ + A-).

    ``expected`` (the probabilities p of the central Gaussian intervals) and ``observed`` (the
    fraction of samples inside them) are the calibration curve; ``overconfident`` is the area
    where observed < expected (A+, errors larger than claimed), ``underconfident`` where
    observed > expected (A-). ``area = overconfident + underconfident``, in [0, 0.5].
    """

    area: float
    overconfident: float
    underconfident: float
    expected: np.ndarray
    observed: np.ndarray


def miscalibration_area(uncertainty, error, bins=100):
    """Area between the Gaussian calibration curve and the diagonal (seed 004 Sec. 2.3, seed 003).

    Each sample claims error ~ N(0, uncertainty^2). For each expected probability
    p in ``np.linspace(0, 1, bins)`` the central interval of probability p is
    |error| <= z_p * uncertainty with z_p = Phi^-1((1 + p) / 2), and ``observed[p]`` is the
    fraction of samples inside it (boundary included; a zero uncertainty holds only a zero
    error). The area between the piecewise-linear curve and the diagonal is integrated exactly,
    crossings included. This is uncertainty-toolbox's ``miscalibration_area`` (prop_type
    "interval", num_bins=bins), which the tests reproduce to round-off.
    """
    uncertainty, error = _validated(uncertainty, error)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2 (points on the calibration curve), got {bins!r}")
    expected = np.linspace(0.0, 1.0, bins)
    z = stats.norm.ppf(0.5 + expected / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        multiples = np.where(uncertainty > 0, error / uncertainty, np.where(error > 0, np.inf, 0.0))
    observed = np.searchsorted(np.sort(multiples), z, side="right") / len(error)

    gap = observed - expected  # > 0: under-confident, < 0: over-confident
    left, right, width = gap[:-1], gap[1:], np.diff(expected)
    crossing = left * right < 0
    span = np.where(crossing, np.abs(left) + np.abs(right), 1.0)

    def part(g0, g1):  # exact integral of max(gap, 0) over each segment, for g = +-gap
        p0, p1 = np.maximum(g0, 0.0), np.maximum(g1, 0.0)
        return float(np.sum(np.where(crossing, width * (p0**2 + p1**2) / (2 * span),
                                     width * (p0 + p1) / 2)))

    under, over = part(left, right), part(-left, -right)
    return Miscalibration(area=over + under, overconfident=over, underconfident=under,
                          expected=expected, observed=observed)


@dataclass(frozen=True)
class CalibratedNLL:
    """Mean Gaussian NLL on the test split with variance = a * uncertainty^2 + b fitted on the
    validation split (seed 004 Eqs. 13-14); ``n_validation`` and ``n_test`` samples were used."""

    nll: float
    a: float
    b: float
    n_validation: int
    n_test: int


def calibrated_nll(uncertainty, error, validation_fraction=0.2, seed=0):
    """Calibrated negative log-likelihood, seed 004 Eqs. 13-14.

    U in seed 004 is a variance (the ensemble force variance, their Eq. 5), so here
    U = uncertainty^2 and the calibrated variance is v = a * uncertainty^2 + b. The validation
    split is ``np.random.default_rng(seed).permutation(n)[:round(validation_fraction * n)]``, the
    test split the rest of that permutation. The validation samples fit a, b by
    minimising the Gaussian NLL  (1/2) [ln(2 pi) + ln v + error^2 / v]  (Eq. 13); the result is
    the *mean* of the same expression over the remaining test samples (Eq. 14 writes the sum; the
    mean does not grow with the test-set size). Lower is better.

    a >= 0 and b >= 0: the variance is then positive for any uncertainty, including ones the
    validation split never saw, and never decreases as the uncertainty grows (a < 0 would turn the
    uncertainty upside down; b < 0 gives negative variances for small uncertainties). a = 0 means
    the uncertainty carried no information; b = 0 a pure rescaling. With a constant uncertainty on
    the validation split a and b cannot be told apart and all the variance goes to b (a = 0).

    The fit minimises the NLL profiled over the overall scale: with v = c (t u + 1 - t), u the
    squared uncertainty over its validation mean, the best c is mean(error^2 / (t u + 1 - t)) in
    closed form and t in [0, 1] is found by a grid plus bounded Brent search, both ends included.
    """
    uncertainty, error = _validated(uncertainty, error)
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}")
    n = len(error)
    n_val = int(round(validation_fraction * n))
    if not 2 <= n_val <= n - 1:
        raise ValueError(
            f"validation_fraction={validation_fraction:g} of {n} samples gives {n_val} validation "
            f"and {n - n_val} test samples; need at least 2 and 1: use more samples or another fraction"
        )
    order = np.random.default_rng(seed).permutation(n)
    val, test = order[:n_val], order[n_val:]
    a, b = _fit_variance(uncertainty[val] ** 2, error[val] ** 2)
    variance = a * uncertainty[test] ** 2 + b
    if np.any(variance <= 0):
        nll = np.inf  # a test sample with zero predicted variance (b = 0 and zero uncertainty)
    else:
        nll = float(np.mean(0.5 * (np.log(2 * np.pi * variance) + error[test] ** 2 / variance)))
    return CalibratedNLL(nll=nll, a=a, b=b, n_validation=len(val), n_test=len(test))


def _fit_variance(u, squared_error):
    """(a, b) >= 0 minimising the Gaussian NLL of `squared_error` under variance a * u + b."""
    scale = float(np.mean(squared_error))
    if scale == 0:
        raise ValueError("all validation errors are zero: the Gaussian NLL has no minimum")
    if np.ptp(u) == 0:
        return 0.0, scale
    u_scale = float(np.mean(u))
    u = u / u_scale
    e2 = squared_error / scale

    def profile(t):  # NLL minus constants, minimised over the overall scale c in closed form
        w = t * u + (1.0 - t)
        if np.any(w <= 0):
            return np.inf
        return np.log(np.mean(e2 / w)) + np.mean(np.log(w))

    grid = np.linspace(0.0, 1.0, 101)
    values = np.array([profile(t) for t in grid])
    best = int(np.argmin(values))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    refined = optimize.minimize_scalar(profile, bounds=(low, high), method="bounded",
                                       options={"xatol": 1e-12})
    t = refined.x if refined.fun < values[best] else grid[best]
    t = float(t)
    c = float(np.mean(e2 / (t * u + 1.0 - t)))
    return c * t * scale / u_scale, c * (1.0 - t) * scale


def sharpness(uncertainty):
    """sqrt(mean(uncertainty^2)): the root of the mean predicted variance (seed 003 Sec. 4.1).

    Same units as the uncertainty; smaller is sharper (more confident). uncertainty-toolbox's
    ``sharpness`` computes the same.
    """
    uncertainty = _values("uncertainty", uncertainty)
    _require_non_negative(uncertainty)
    return float(np.sqrt(np.mean(uncertainty**2)))


@dataclass(frozen=True)
class Sparsification:
    """Sparsification curve (seed 002 Fig. 2): after removing the fraction ``fractions[m]`` of
    samples with the largest uncertainty (``curve``) or the largest |error| (``oracle``), the mean
    |error| of the rest. ``area`` is the area between the two curves over ``fractions`` divided by
    the mean |error| of all samples: 0 for a perfect ranking, larger is worse."""

    fractions: np.ndarray
    curve: np.ndarray
    oracle: np.ndarray
    area: float


def sparsification(uncertainty, error, steps=100, max_fraction=0.99):
    """Sparsification and oracle curves and the normalised area between them (seed 002 Fig. 2).

    Seed 002 reports the mean absolute error of the samples left, so ``curve`` and ``oracle`` are
    mean |error|. At fraction f the floor(f n) samples with the largest uncertainty (or error) are
    removed, f in ``np.linspace(0, max_fraction, steps)``; at least one sample always remains.
    Samples with tied uncertainties are removed in random order on average: within a tie group each
    counts with the group's mean |error|, so the result does not depend on the input order.
    ``area`` = trapezoid integral of (curve - oracle) over f, divided by mean |error| (curve[0]),
    so it is unit-free and comparable between data sets.
    """
    uncertainty, error = _validated(uncertainty, error)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    if not 0.0 < max_fraction < 1.0:
        raise ValueError(f"max_fraction must be in (0, 1), got {max_fraction!r}")
    mean_error = float(np.mean(error))
    if mean_error == 0:
        raise ValueError("error is zero everywhere: the normalised sparsification area is undefined")
    n = len(error)
    fractions = np.linspace(0.0, max_fraction, steps)
    removed = np.floor(np.round(fractions * n, 9)).astype(int)

    by_uncertainty = np.argsort(-uncertainty, kind="stable")
    ranked_errors = error[by_uncertainty]
    _, group = np.unique(uncertainty[by_uncertainty], return_inverse=True)
    ranked_errors = (np.bincount(group, ranked_errors) / np.bincount(group))[group]
    curve = _mean_of_rest(ranked_errors, removed)
    oracle = _mean_of_rest(np.sort(error)[::-1], removed)
    gap = curve - oracle
    area = float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(fractions))) / mean_error
    return Sparsification(fractions=fractions, curve=curve, oracle=oracle, area=area)


def _mean_of_rest(ranked, removed):
    """Mean of ``ranked[k:]`` for each k in `removed` (ranked: largest first)."""
    tail = np.concatenate([np.cumsum(ranked[::-1])[::-1], [0.0]])  # tail[k] = sum(ranked[k:])
    return tail[removed] / (len(ranked) - removed)


def _validated(uncertainty, error):
    """(uncertainty, |error|) as float arrays; ValueError on bad input."""
    uncertainty = _values("uncertainty", uncertainty)
    error = _values("error", error)
    if len(uncertainty) != len(error):
        raise ValueError(f"uncertainty has {len(uncertainty)} values but error has {len(error)}")
    _require_non_negative(uncertainty)
    return uncertainty, np.abs(error)


def _values(name, values):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one value per sample), got shape {values.shape}")
    if len(values) < 2:
        raise ValueError(f"{name} needs at least two values, got {len(values)}")
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise ValueError(f"{name}[{bad[0]}] is {values[bad[0]]}: all values must be finite")
    return values


def _require_non_negative(uncertainty):
    negative = np.flatnonzero(uncertainty < 0)
    if len(negative):
        i = negative[0]
        raise ValueError(
            f"uncertainty[{i}] = {uncertainty[i]} is negative: uncertainties are standard deviations (>= 0)"
        )


def _require_varying(uncertainty, error, what):
    if np.ptp(uncertainty) == 0:
        raise ValueError(f"uncertainty is constant: {what} undefined")
    if np.ptp(error) == 0:
        raise ValueError(f"|error| is constant: {what} undefined")
