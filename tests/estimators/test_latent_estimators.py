"""LTAU (seed 003) and the latent Gaussian mixture (seed 004 Eq. 11) with the real bundled model."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from mdmonitor import LTAU, LatentGMM, MonitoredCalculator, aggregate
from mdmonitor.cli import main
from mdmonitor.common.trusted_pickles import trusted_pickle_loads
from mdmonitor.estimators.gmm import negative_log_likelihood
from mdmonitor.estimators.latent import LatentModel
from mdmonitor.estimators.ltau import (
    bin_of,
    log_training_errors,
    nearest_neighbour_index,
)
from mdmonitor.estimators.mace_model import MaceModel
from mdmonitor.quality.calibration import Calibration


@pytest.fixture(scope="module")
def model(models):
    return MaceModel(models["committee"][0])


@pytest.fixture(scope="module")
def small_training():
    """16 rattled 32-atom cells (512 atoms) and a made-up error log of 6 epochs."""
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(16):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.positions += rng.normal(scale=0.06, size=atoms.positions.shape)
        frames.append(atoms)
    errors = rng.gamma(2.0, 0.02, size=(6, 16 * 32))
    return frames, errors


def compressed_dimer():
    """Two Cu atoms 1.8 A apart in vacuum: nothing like the bulk training set."""
    return Atoms("Cu2", positions=[[5, 5, 5], [6.8, 5, 5]], cell=[12, 12, 12], pbc=False)


def test_descriptors_are_maces_own_invariant_descriptors(model, cu_bulk):
    from mace.calculators import MACECalculator

    ours = LatentModel(model).predict(cu_bulk)[1]
    with trusted_pickle_loads():  # mace's calculator loads the model pickle bare
        calc = MACECalculator(model_paths=str(model.path), device="cpu", default_dtype="float64")
    np.testing.assert_allclose(ours, calc.get_descriptors(cu_bulk, invariants_only=True),
                               atol=1e-12)
    assert ours.shape == (32, 32)


def test_bins_follow_the_edges():
    edges = np.linspace(0.0, 1.0, 5)  # bins of 0.25
    errors = np.array([0.0, 0.1, 0.25, 0.74, 1.0, 3.0])
    assert bin_of(errors, edges).tolist() == [0, 0, 1, 2, 3, 3]


def test_training_atom_against_its_own_index_returns_its_own_pdf(model, small_training):
    frames, errors = small_training
    ltau = LTAU.fit(model, frames, errors, k=1, bins=200, progress=False)
    atom = 37  # frame 1, atom 5
    pdf = ltau.error_distribution(frames[1])[5]
    own = np.histogram(errors[:, atom], bins=ltau.bin_edges)[0] / len(errors)
    np.testing.assert_allclose(pdf, own)
    expected = own @ ltau.bin_centres
    assert ltau.predict(frames[1]).atomic_uncertainty[5] == pytest.approx(expected, rel=1e-12)
    # the expectation is that of the logged errors, up to half a bin
    assert abs(expected - errors[:, atom].mean()) <= 0.5 * (ltau.bin_edges[1] - ltau.bin_edges[0])
    assert ltau.predict(frames[1]).extra["latent_distance"][5] < 1e-3


def test_first_epoch_leaves_out_the_early_errors(model, small_training):
    frames, errors = small_training
    errors = errors.copy()
    errors[:2] += 5.0  # two "untrained" epochs
    late = LTAU.fit(model, frames, errors, k=1, first_epoch=2, progress=False)
    assert late.n_epochs == 4 and late.bin_edges[-1] == pytest.approx(errors[2:].max())
    own = late.predict(frames[0]).atomic_uncertainty
    np.testing.assert_allclose(own, errors[2:, :32].mean(axis=0),
                               atol=0.5 * late.bin_edges[1])
    with pytest.raises(ValueError, match="first_epoch 6 is not one of the 6"):
        LTAU.fit(model, frames, errors, first_epoch=6, progress=False)


def test_k_neighbours_average_their_pdfs(model, small_training):
    frames, errors = small_training
    ltau = LTAU.fit(model, frames, errors, k=10, bins=50, progress=False)
    descriptors = LatentModel(model).predict(frames[3])[1]
    _, neighbours = ltau.indices[29].search(descriptors.astype(np.float32), 10)
    assert (neighbours[:, 0] == np.arange(96, 128)).all()  # each atom's nearest is itself
    manual = np.stack([np.histogram(errors[:, n], bins=ltau.bin_edges)[0] for n in
                       neighbours.ravel()]).reshape(32, 10, -1).mean(axis=1) / len(errors)
    np.testing.assert_allclose(ltau.error_distribution(frames[3]), manual, atol=1e-12)
    np.testing.assert_allclose(ltau.predict(frames[3]).atomic_uncertainty,
                               manual @ ltau.bin_centres, rtol=1e-12)


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_ltau_save_load_round_trip(model, small_training, tmp_path, index):
    frames, errors = small_training
    ltau = LTAU.fit(model, frames, errors, index=index, progress=False)
    ltau.save(tmp_path / "ltau.npz")
    loaded = LTAU.load(tmp_path / "ltau.npz", model=model.path)
    probe = frames[0].copy()
    probe.rattle(0.1, seed=1)
    for what in ("atomic_uncertainty", "forces"):
        np.testing.assert_array_equal(getattr(loaded.predict(probe), what),
                                      getattr(ltau.predict(probe), what))
    assert loaded.ood_cutoffs == ltau.ood_cutoffs and loaded.state_sha256() == ltau.state_sha256()


def test_ltau_flags_a_compressed_dimer_out_of_domain_and_not_the_training_set(ltau, models):
    from mdmonitor.common.structures import load_structures

    dimer = ltau.predict(compressed_dimer())
    assert dimer.extra["out_of_domain"].all()
    assert (dimer.extra["latent_distance"] > 3 * ltau.ood_cutoffs[29]).all()
    flagged = np.concatenate([ltau.predict(a).extra["out_of_domain"]
                              for a in load_structures(models["training_set"])[:20]])
    assert flagged.mean() < 0.01


def test_ltau_uncertainty_is_higher_at_the_surface_than_in_the_centre(ltau, cu_slab,
                                                                      slab_regions):
    surface, centre = slab_regions
    expected = ltau.predict(cu_slab).atomic_uncertainty
    assert expected[surface].mean() > 1.5 * expected[centre].mean()


def test_gmm_nll_is_the_mixture_density_of_scikit_learn(model, small_training):
    from sklearn.mixture import GaussianMixture

    frames, _ = small_training
    gmm = LatentGMM.fit(model, frames, n_components=2, progress=False)
    descriptors = LatentModel(model).predict(frames[0])[1]
    reference = GaussianMixture(2, covariance_type="full", reg_covar=1e-6, random_state=0)
    reference.fit(LatentModel(model).training_descriptors(frames, progress=False)[0])
    np.testing.assert_allclose(negative_log_likelihood(gmm.mixtures[29], descriptors),
                               -reference.score_samples(descriptors), rtol=1e-8)
    assert gmm.n_components == {29: 2}


def test_gmm_nll_is_higher_off_distribution(gmm, models, cu_slab, slab_regions):
    from mdmonitor.common.structures import load_structures

    training = np.concatenate([gmm.predict(a).extra["latent_nll"]
                               for a in load_structures(models["training_set"])[:20]])
    surface, _ = slab_regions
    slab_nll = gmm.predict(cu_slab).extra["latent_nll"]
    dimer_nll = gmm.predict(compressed_dimer()).extra["latent_nll"]
    assert np.median(slab_nll[surface]) > np.quantile(training, 0.99)
    assert dimer_nll.min() > slab_nll.max()
    assert gmm.predict(cu_slab).atomic_uncertainty.min() > -1.0  # floor: the likeliest atom


def test_gmm_chooses_components_by_bic_and_round_trips(model, small_training, tmp_path):
    frames, _ = small_training
    gmm = LatentGMM.fit(model, frames, max_components=3, progress=False)
    assert 1 <= gmm.n_components[29] <= 3
    gmm.save(tmp_path / "gmm.npz")
    loaded = LatentGMM.load(tmp_path / "gmm.npz")
    np.testing.assert_array_equal(loaded.predict(frames[2]).atomic_uncertainty,
                                  gmm.predict(frames[2]).atomic_uncertainty)


def test_estimators_refuse_another_model(ltau, gmm, models, tmp_path):
    for estimator, cls in ((ltau, LTAU), (gmm, LatentGMM)):
        estimator.save(tmp_path / "est.npz")
        with pytest.raises(ValueError, match="another model"):
            cls.load(tmp_path / "est.npz", model=models["committee"][1])
    with pytest.raises(ValueError, match="not an mdmonitor LTAU file"):
        LTAU.load(models["gmm"])


def test_mismatched_feature_width_fails_clearly(ltau, gmm, model):
    narrow = nearest_neighbour_index(np.zeros((20, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="width 16.*has 32"):
        LTAU(model, {29: narrow}, ltau.bins, ltau.bin_edges, ltau.ood_cutoffs)
    mixture = {name: value[:, :16] if name == "means" else value
               for name, value in gmm.mixtures[29].items()}
    with pytest.raises(ValueError, match="width 16.*has 32"):
        LatentGMM(model, {29: mixture}, gmm.floors)


def test_index_built_for_other_elements_fails_clearly(ltau, gmm, model, cu_bulk):
    silver_only = LTAU(model, {47: ltau.indices[29]}, {47: ltau.bins[29]}, ltau.bin_edges,
                       {47: 1.0})
    with pytest.raises(ValueError, match="no training atoms of Cu.*Ag"):
        silver_only.predict(cu_bulk)
    with pytest.raises(ValueError, match="has no Cu.*Ag"):
        LatentGMM(model, {47: gmm.mixtures[29]}, {47: 0.0}).predict(cu_bulk)


def test_error_log_from_checkpoints(models, tmp_path, cu_bulk):
    """Three "epochs" of model 0 with rescaled readouts, saved as MACE checkpoints and as model
    files: the log holds each one's force errors as MaceModel computes them."""
    import copy

    frames = [cu_bulk.copy() for _ in range(2)]
    frames[1].rattle(0.1, seed=9)
    reference = MaceModel(models["committee"][3])
    for frame in frames:
        frame.arrays["REF_forces"] = reference.predict(frame).forces
    expected = []
    for epoch in range(3):
        network = copy.deepcopy(MaceModel(models["committee"][0]).module)
        for readout in network.readouts:
            for parameter in readout.parameters():
                parameter.mul_(1.0 + 0.2 * epoch)
        torch.save({"model": network.state_dict()}, tmp_path / f"cu_run-1_epoch-{epoch}.pt")
        torch.save(network, tmp_path / f"epoch{epoch}.model")
        member = MaceModel(tmp_path / f"epoch{epoch}.model")
        expected.append(np.concatenate([np.linalg.norm(member.predict(f).forces
                                                       - f.arrays["REF_forces"], axis=1)
                                        for f in frames]))
    errors = log_training_errors(models["committee"][0], tmp_path, frames, tmp_path / "e.npz")
    np.testing.assert_allclose(errors, expected, rtol=1e-10)
    assert errors[2].mean() > 2 * errors[0].mean()  # the epochs differ
    stored = np.load(tmp_path / "e.npz")
    assert stored["epochs"].tolist() == [0, 1, 2] and stored["errors"].shape == (3, 64)
    with pytest.raises(ValueError, match="64 atoms that are not the 32 atoms"):
        LTAU.fit(models["committee"][0], frames[:1], tmp_path / "e.npz", progress=False)


def test_monitor_aggregates_ltau_and_gmm_and_calibrates(ltau, gmm, cu_slab, tmp_path):
    for estimator in (ltau, gmm):
        atoms = cu_slab.copy()
        atoms.calc = MonitoredCalculator(estimator, cutoff=4.0)
        atoms.get_forces()
        results = atoms.calc.results
        np.testing.assert_allclose(results["local_uncertainty"],
                                   aggregate(atoms, results["atomic_uncertainty"], 4.0))
    labeled = [cu_slab.copy(), cu_slab.copy()]
    labeled[1].rattle(0.05, seed=5)
    for frame in labeled:
        frame.arrays["REF_forces"] = ltau.predict(frame).forces + 0.05  # a known error
    calibration = Calibration.fit(ltau, labeled, cutoff=4.0, progress=False)
    assert calibration.estimator["kind"] == "ltau"
    # e_j = (1/3) sum_k |dF_jk| = 0.05 eV/A everywhere, so alpha = 0.05 / mean local uncertainty
    assert calibration.mean_error == pytest.approx(0.05)
    calibration.check(ltau, 4.0)
    with pytest.raises(ValueError, match="LTAU of"):
        calibration.check(gmm, 4.0)


def test_cli_fits_gmm_and_ltau(models, small_training, tmp_path, capsys):
    import ase.io

    frames, errors = small_training
    ase.io.write(tmp_path / "train.extxyz", frames)
    np.savez(tmp_path / "errors.npz", errors=errors)
    model = models["committee"][0]
    assert main(["fit-gmm", model, str(tmp_path / "train.extxyz"), "--components", "2",
                 "-o", str(tmp_path / "gmm.npz")]) == 0
    assert main(["fit-ltau", model, str(tmp_path / "train.extxyz"), str(tmp_path / "errors.npz"),
                 "-o", str(tmp_path / "ltau.npz")]) == 0
    assert "6 epochs, 1000 bins" in capsys.readouterr().out
    assert LatentGMM.load(tmp_path / "gmm.npz").n_components == {29: 2}
    np.savez(tmp_path / "short.npz", errors=errors[:, :10])
    assert main(["fit-ltau", model, str(tmp_path / "train.extxyz"), str(tmp_path / "short.npz")]) == 1
    assert "10 atoms that are not the 512 atoms" in capsys.readouterr().err


def test_extraction_relaxes_boxes_with_the_single_model(gmm, ltau, cu_bulk, tmp_path):
    import ase.io

    from mdmonitor import Extractor

    for estimator in (gmm, ltau):
        queue = tmp_path / estimator.kind
        extractor = Extractor("cube", queue=queue, core_radius=3.0, box_length=2 * 3.61)
        atoms = cu_bulk.copy()
        atoms.calc = MonitoredCalculator(estimator, cutoff=4.0, threshold=1e-9,
                                         extractor=extractor)
        atoms.get_forces()
        [path] = (queue / "pending").iterdir()
        box = ase.io.read(path)
        assert box.info["relaxation"] == "relaxed"
        assert box.info["model_sha256"] == estimator.model.sha256()
