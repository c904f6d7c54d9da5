"""The last-layer LLPR posterior carried to the forces (issue 25), on the bundled Cu model."""

import ase.io
import numpy as np
import pytest
import torch
from ase.build import fcc111

from mdmonitor import Combined, LastLayerLPR, MonitoredCalculator
from mdmonitor.cli import main
from mdmonitor.estimators.force_posterior import (
    forces_with_feature_derivatives,
    posterior_perturbations,
)

SCALE = 0.3  # alpha (eV): the variances scale with its square


def with_target(llpr, samples, scale=SCALE, seed=0):
    return LastLayerLPR(llpr.model, llpr.hessian, llpr.regularizer, llpr.forces,
                        scale=scale, target="forces", samples=samples, seed=seed)


@pytest.fixture(scope="module")
def exact(llpr):
    return with_target(llpr, 0)


def test_with_target_reads_an_energy_llpr_posterior_for_the_forces(llpr, exact, cu_slab):
    carried = llpr.with_target("forces")
    assert (carried.target, carried.samples, carried.regularizer) == ("forces", 0,
                                                                      llpr.regularizer)
    assert np.array_equal(carried.hessian, llpr.hessian)
    back = carried.with_target("energy")
    assert np.allclose(back.predict(cu_slab).atomic_uncertainty,
                       llpr.predict(cu_slab).atomic_uncertainty)
    carried.scale = SCALE
    assert np.allclose(carried.predict(cu_slab).atomic_uncertainty,
                       exact.predict(cu_slab).atomic_uncertainty)


def test_perturbations_are_samples_of_the_inverse_gauss_newton_matrix(llpr):
    # whitened by L^T they must be standard normal: covariance I within sampling error
    cholesky = llpr._cholesky
    delta = posterior_perturbations(cholesky, 20000, seed=1)
    whitened = (delta @ cholesky).numpy()
    covariance = np.cov(whitened, rowvar=False)
    assert np.abs(covariance - np.eye(len(covariance))).max() < 5 * np.sqrt(2 / 20000)
    assert np.allclose(posterior_perturbations(cholesky, 3, seed=1), delta[:3])


def test_feature_jacobian_matches_finite_differences(llpr, cu_slab):
    dim = llpr.features.dim
    _, jacobian = forces_with_feature_derivatives(llpr.model, llpr.features, cu_slab,
                                                  torch.eye(dim, dtype=torch.float64))
    step = 1e-4
    for atom, component in ((0, 2), (5, 0), (23, 1)):
        moved = []
        for sign in (1, -1):
            frame = cu_slab.copy()
            frame.positions[atom, component] += sign * step
            moved.append(llpr.atomic_features(frame).sum(axis=0))
        numeric = (moved[0] - moved[1]) / (2 * step)
        assert np.abs(numeric).max() > 1e-3  # not a blind comparison of zeros
        assert np.allclose(jacobian[:, atom, component], numeric, rtol=1e-5, atol=1e-8)


def test_exact_variance_is_g_inverse_h_g_with_finite_difference_g(llpr, exact, cu_slab):
    variance = exact.predict(cu_slab).extra["force_variance"]
    matrix = llpr.hessian + llpr.regularizer * np.eye(len(llpr.hessian))
    step = 1e-4
    for atom, component in ((0, 2), (11, 1)):
        moved = []
        for sign in (1, -1):
            frame = cu_slab.copy()
            frame.positions[atom, component] += sign * step
            moved.append(llpr.atomic_features(frame).sum(axis=0))
        g = (moved[0] - moved[1]) / (2 * step)
        expected = SCALE**2 * g @ np.linalg.solve(matrix, g)
        assert variance[atom, component] == pytest.approx(expected, rel=1e-4)


def test_atomic_uncertainty_is_the_committee_mean_over_components_of_the_std(exact, cu_slab):
    prediction = exact.predict(cu_slab)
    assert np.allclose(prediction.atomic_uncertainty,
                       np.sqrt(prediction.extra["force_variance"]).mean(axis=1))


def test_model_energy_forces_and_stress_are_unchanged(llpr, exact, cu_slab):
    plain, forces = llpr.predict(cu_slab), exact.predict(cu_slab)
    assert forces.energy == pytest.approx(plain.energy, abs=1e-10)
    assert np.allclose(forces.forces, plain.forces, atol=1e-10)
    assert np.allclose(forces.stress, plain.stress, atol=1e-12)
    cluster = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    cluster.pbc = False
    assert np.allclose(exact.predict(cluster).forces, llpr.predict(cluster).forces, atol=1e-10)


def test_sampled_variance_converges_to_the_exact_one(llpr, exact, cu_slab):
    variance = exact.predict(cu_slab).extra["force_variance"]
    deviations = {}
    for samples in (20, 500):
        members = with_target(llpr, samples, seed=2).predict(cu_slab).extra[
            "forces_contributions"]
        ratio = members.var(axis=0, ddof=1) / variance
        deviations[samples] = np.median(np.abs(ratio - 1))
    assert deviations[500] < 3 * np.sqrt(2 / 499)  # the sampling error of a variance
    assert deviations[500] < deviations[20] / 2


def test_sampled_spread_is_a_committee_of_last_layer_weights(llpr, exact, cu_slab):
    sampled = with_target(llpr, 500, seed=3).predict(cu_slab)
    members = sampled.extra["forces_contributions"]
    assert members.shape == (500, len(cu_slab), 3)
    assert np.allclose(sampled.atomic_uncertainty, members.std(axis=0, ddof=1).mean(axis=1))
    assert np.allclose(members.mean(axis=0), sampled.forces, atol=0.2 * SCALE)
    ratio = sampled.atomic_uncertainty / exact.predict(cu_slab).atomic_uncertainty
    assert np.abs(ratio - 1).max() < 0.15


def test_force_covariance_is_equivariant_under_rotation(exact, cu_slab):
    rotated = cu_slab.copy()
    rotated.rotate(70, v=(0.3, -1.1, 0.7), rotate_cell=True)
    before, after = exact.force_covariance(cu_slab), exact.force_covariance(rotated)
    matrix = rotated.cell.array.T @ np.linalg.inv(cu_slab.cell.array.T)  # the rotation R
    assert np.allclose(matrix @ matrix.T, np.eye(3))
    expected = np.einsum("kl,jlm,nm->jkn", matrix, before, matrix)
    assert np.abs(before).max() > 1e-6
    assert np.allclose(after, expected, rtol=1e-6, atol=1e-9 * np.abs(before).max())
    assert np.allclose(np.trace(after, axis1=1, axis2=2), np.trace(before, axis1=1, axis2=2))


def test_uncertainty_is_proportional_to_alpha(llpr, cu_slab):
    for samples in (0, 4):
        small = with_target(llpr, samples, scale=0.1).predict(cu_slab).atomic_uncertainty
        large = with_target(llpr, samples, scale=0.4).predict(cu_slab).atomic_uncertainty
        assert np.allclose(large, 4 * small)


def test_settings_that_do_not_fit_the_force_target_are_refused(llpr):
    with pytest.raises(ValueError, match="samples must be 0"):
        with_target(llpr, 1)
    with pytest.raises(ValueError, match="target must be"):
        LastLayerLPR(llpr.model, llpr.hessian, llpr.regularizer, llpr.forces, target="force")
    forces = with_target(llpr, 2)
    with pytest.raises(ValueError, match="energy LPR"):
        forces.component = 0
    with pytest.raises(ValueError, match="element-relative"):
        forces.relative_to_elements([])


def test_save_and_load_keep_the_target_and_tell_it_from_the_energy_lpr(llpr, models, cu_slab,
                                                                          tmp_path):
    sampled = with_target(llpr, 3, seed=7)
    sampled.save(tmp_path / "forces.npz")
    again = LastLayerLPR.load(tmp_path / "forces.npz", model=models["committee"][0])
    assert (again.target, again.samples, again.seed, again.scale) == ("forces", 3, 7, SCALE)
    assert np.allclose(again.predict(cu_slab).atomic_uncertainty,
                       sampled.predict(cu_slab).atomic_uncertainty)
    assert again.state_sha256() != with_target(llpr, 3, seed=8).state_sha256()
    assert again.state_sha256() != LastLayerLPR(llpr.model, llpr.hessian, llpr.regularizer,
                                                 llpr.forces, scale=SCALE).state_sha256()
    assert LastLayerLPR.load(models["llpr"]).target == "energy"  # files from before


def test_monitor_and_combined_use_the_force_target(llpr, committee, cu_slab):
    sampled = with_target(llpr, 4)
    calc = MonitoredCalculator(sampled, cutoff=4.0)
    cu_slab.calc = calc
    cu_slab.get_forces()
    assert calc.results["atomic_uncertainty"].shape == (len(cu_slab),)
    assert calc.results["local_uncertainty"].min() > 0
    calc = MonitoredCalculator(sampled, cutoff=4.0, interval=2)
    cu_slab.calc = calc
    steps = []
    for step in range(3):
        cu_slab.positions[0, 0] += 0.01
        cu_slab.get_forces()
        steps.append("atomic_uncertainty" in calc.results)
    assert steps == [True, False, True]  # the samples are computed on monitored steps only
    assert np.allclose(cu_slab.get_forces(), llpr.predict(cu_slab).forces, atol=1e-10)
    combined = Combined({"llpr-forces": sampled, "committee": committee}).predict(cu_slab)
    assert np.allclose(combined.extra["signals"]["llpr-forces"],
                       sampled.predict(cu_slab).atomic_uncertainty)


def test_fit_llpr_fits_alpha_on_validation_forces_like_the_committee(models, tmp_path, capsys):
    frames = ase.io.read(models["validation_set"], index=":20")
    ase.io.write(tmp_path / "valid.extxyz", frames)
    ase.io.write(tmp_path / "train.extxyz", ase.io.read(models["training_set"], index=":6"))
    output = tmp_path / "forces.npz"
    # (energy terms only: the fit of the matrix is not what is tested, and it is faster)
    assert main(["fit-llpr", models["committee"][0], str(tmp_path / "train.extxyz"),
                 "-o", str(output), "--no-forces",
                 "--target", "forces", "--samples", "3",
                 "--validation", str(tmp_path / "valid.extxyz")]) == 0
    fitted = LastLayerLPR.load(output, model=models["committee"][0])
    assert "alpha" in capsys.readouterr().out
    errors, spreads = [], []
    for atoms in frames:
        prediction = fitted.predict(atoms)
        errors.append(np.abs(prediction.forces - atoms.arrays["REF_forces"]).mean(axis=1))
        spreads.append(prediction.atomic_uncertainty)
    # seed 002 Eq. 3 at the atoms: mean error = mean (calibrated) spread
    assert np.concatenate(spreads).mean() == pytest.approx(np.concatenate(errors).mean(),
                                                           rel=1e-6)


def test_an_update_draws_the_samples_from_the_updated_posterior(llpr, cu_bulk, cu_slab):
    """A file saved after update() and reloaded (and its LAMMPS export) draws from the new H;
    the updated estimator must predict the same."""
    sampled = with_target(llpr, 4, seed=2)
    sampled.update([cu_bulk])
    reloaded = with_target(sampled, 4, seed=2)
    assert np.allclose(sampled.predict(cu_slab).atomic_uncertainty,
                       reloaded.predict(cu_slab).atomic_uncertainty, rtol=1e-12, atol=0)
    assert not np.allclose(sampled.force_directions,
                           with_target(llpr, 4, seed=2).force_directions)
