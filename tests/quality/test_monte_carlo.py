"""Heid et al. 2024 (seed 002), Sec. II.A, Eqs. 1-8 and Fig. 1: a committee whose only error is
model variance, simulated by Monte Carlo.

Setup (the paper's, Fig. 1): N_C = 10 members, N_i = 100 structures of N_j = 1000 atoms, and for
every structure i, atom j and direction k its own ground-truth sigma_ij^k drawn from an
inverse-Gamma distribution. The paper does not give its parameters; we use shape 3, scale 2
(mean 1, standard deviation 1: a heavy tail, finite variance). Truth is 0 and member l predicts
sigma_ij^k * N(0, 1), so:

- committee mean (Eq. 4) ~ N(0, sigma^2 / N_C): its absolute error (Eq. 5) has expectation
  E|e| = sqrt(2 / pi) * sigma / sqrt(N_C) = alpha * sigma with alpha = 2 / sqrt(2 pi N_C)
  (Eq. 2, = 0.2523 for N_C = 10);
- committee std s (Eq. 1/6, ddof = 1) is independent of the mean and has E[s] = c4(N_C) * sigma,
  c4(10) = 0.9727: the unbiased *variance* estimator gives a biased std, the underestimate the
  paper mentions below Eq. 1.

Hence, over many samples, mean(e) / mean(sigma) -> alpha = 0.2523 exactly as Eq. 2 states with the
population sigma, whereas mean(e) / mean(s), the ratio of Eq. 3 with the committee std that a
monitor actually has, -> alpha / c4 = 0.2594, 2.8 % higher. The mean of the individual ratios e/s
(the dashed line of Fig. 1a) is neither: e/s = |t_{N_C-1}| / sqrt(N_C) for every sigma, whose mean
is 0.2761. Per structure the ratio of the averages e_i / s_i (Eqs. 7-8) concentrates at
alpha / c4 with a width shrinking like 1 / sqrt(3 N_j).

A finding the tests pin down: with sigma_ij^k independent and identically distributed, as in the
paper, the per-structure averages are means of i.i.d. (s, e) pairs, so their Pearson correlation
equals the per-atom one; aggregation narrows the ratio but does not make uncertainty rank errors
better. It does when the uncertainty level differs between groups of atoms (structures or regions
far from or near the training data, as in seed 002 Fig. 3c): the test of that multiplies every
structure's sigmas by its own inverse-Gamma scale (shape 12, scale 11: mean 1, std 0.32).
"""

import numpy as np
import pytest
from scipy import special

from mdmonitor.quality.metrics import pearson, sparsification, spearman

N_C = 10
ALPHA = 2 / np.sqrt(2 * np.pi * N_C)  # Eq. 2: 0.2523
C4 = np.sqrt(2 / (N_C - 1)) * special.gamma(N_C / 2) / special.gamma((N_C - 1) / 2)  # E[s] / sigma
MEAN_T_RATIO = (2 * np.sqrt(N_C - 1) * special.gamma(N_C / 2)  # E|t_{N_C-1}| / sqrt(N_C)
                / (np.sqrt(np.pi) * (N_C - 2) * special.gamma((N_C - 1) / 2)) / np.sqrt(N_C))


def inverse_gamma(rng, shape, scale, size):
    """InvGamma(shape, scale) draws: scale / Gamma(shape, 1) (scipy.stats.invgamma's law, faster)."""
    return scale / rng.gamma(shape, size=size)


def committee_experiment(n_structures, n_atoms, seed, structure_scale_shape=None):
    """Ground-truth sigma, committee-mean absolute error e and committee std s, shape (N_i, N_j, 3)."""
    rng = np.random.default_rng(seed)
    sigma = inverse_gamma(rng, 3.0, 2.0, (n_structures, n_atoms, 3))
    if structure_scale_shape is not None:
        shape = structure_scale_shape
        sigma *= inverse_gamma(rng, shape, shape - 1, (n_structures, 1, 1))
    members = sigma[..., None] * rng.standard_normal(sigma.shape + (N_C,))  # the truth is 0
    error = np.abs(members.mean(axis=-1))  # Eqs. 4-5
    std = members.std(axis=-1, ddof=1)  # Eqs. 1, 6
    return sigma, error, std


def per_atom(values):
    """Mean over x, y, z: Eqs. 7-8 for a single atom, the per-atom uncertainty of MISSION.md."""
    return values.mean(axis=-1)


def per_structure(values):
    """Mean over the atoms and directions of each structure, Eqs. 7-8."""
    return values.mean(axis=(-2, -1))


def cv(values):
    return np.std(values) / np.mean(values)


@pytest.fixture(scope="module")
def paper():
    """The paper's Fig. 1 setup: N_i = 100, N_j = 1000, i.i.d. sigma_ij^k."""
    return committee_experiment(100, 1000, seed=2024)


@pytest.fixture(scope="module")
def regions():
    """Same, with a spread of uncertainty levels between structures."""
    return committee_experiment(100, 1000, seed=7, structure_scale_shape=12.0)


def test_constants_of_eq_2():
    assert ALPHA == pytest.approx(0.2523, abs=1e-4)
    assert C4 == pytest.approx(0.9727, abs=1e-4)
    assert ALPHA / C4 == pytest.approx(0.2594, abs=1e-4)
    assert MEAN_T_RATIO == pytest.approx(0.2761, abs=1e-4)


def test_mean_error_is_alpha_times_mean_sigma_and_alpha_over_c4_times_mean_committee_std(paper):
    sigma, error, std = paper
    assert error.mean() / sigma.mean() == pytest.approx(ALPHA, rel=0.005)  # Eq. 2, population sigma
    assert error.mean() / std.mean() == pytest.approx(ALPHA / C4, rel=0.005)  # Eq. 3, committee std
    assert error.mean() / std.mean() > 1.02 * ALPHA  # the c4 bias is resolved, not within noise
    # Per atom and after aggregation over structures (equal sizes: the same grand means)
    assert per_atom(error).mean() / per_atom(std).mean() == pytest.approx(ALPHA / C4, rel=0.005)
    assert per_structure(error).mean() / per_structure(std).mean() == pytest.approx(ALPHA / C4, rel=0.005)


def test_average_ratios_of_fig_1_individual_and_per_structure(paper):
    _, error, std = paper
    assert np.mean(error / std) == pytest.approx(MEAN_T_RATIO, rel=0.005)  # Fig. 1a dashed line
    assert np.mean(per_structure(error) / per_structure(std)) == pytest.approx(ALPHA / C4, rel=0.005)  # 1b


def test_per_structure_ratio_is_narrow_and_per_atom_ratio_is_broad(paper):
    _, error, std = paper
    atom_cv = cv(per_atom(error) / per_atom(std))  # 0.518
    structure_cv = cv(per_structure(error) / per_structure(std))  # 0.023: ~1 / sqrt(3 N_j)
    assert atom_cv > 0.4
    assert structure_cv < 0.03
    assert atom_cv > 15 * structure_cv


def test_iid_sigmas_aggregation_narrows_the_ratio_but_keeps_the_correlation():
    # 1000 structures of 100 atoms so that the per-structure correlation is itself precise.
    _, error, std = committee_experiment(1000, 100, seed=11)
    atom = pearson(per_atom(std).ravel(), per_atom(error).ravel())  # 0.639
    structure = pearson(per_structure(std), per_structure(error))  # 0.631
    assert structure == pytest.approx(atom, abs=0.1)
    atom_cv, structure_cv = cv(per_atom(error) / per_atom(std)), cv(per_structure(error) / per_structure(std))
    assert structure_cv < 0.2 * atom_cv  # 0.063 and 0.517


def test_aggregated_uncertainty_ranks_errors_far_better_than_per_atom(regions):
    _, error, std = regions
    atom_error, atom_std = per_atom(error).ravel(), per_atom(std).ravel()
    structure_error, structure_std = per_structure(error), per_structure(std)
    atom_rho = spearman(atom_std, atom_error)  # 0.646 (0.62-0.66 over seeds 0-7)
    structure_rho = spearman(structure_std, structure_error)  # 0.997 (0.9956-0.9977)
    assert atom_rho < 0.75
    assert structure_rho > 0.99
    assert 1 - structure_rho < (1 - atom_rho) / 20
    # Seed 002 Fig. 2 (third column): per-atom sparsification is far from the oracle, per structure
    # nearly on it.
    assert sparsification(atom_std, atom_error).area > 0.1  # 0.132
    assert sparsification(structure_std, structure_error).area < 0.01  # 0.001
    # The Eq. 3 ratio does not depend on how sigma is distributed.
    assert error.mean() / std.mean() == pytest.approx(ALPHA / C4, rel=0.005)
    assert cv(structure_error / structure_std) < 0.03
