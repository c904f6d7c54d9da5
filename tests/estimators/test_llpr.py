"""Last-layer prediction rigidity of one MACE model (seeds 000 and 001)."""

import numpy as np
import pytest
import torch
from mace.calculators import MACECalculator
from mace.modules.utils import get_edge_vectors_and_lengths

from mdmonitor import LastLayerLPR
from mdmonitor.common.trusted_pickles import trusted_pickle_loads
from mdmonitor.estimators.llpr import (
    MAX_CONDITION,
    LastLayerFeatures,
    choose_regularizer,
    gauss_newton,
)
from mdmonitor.estimators.mace_model import MaceModel


def rattled(atoms, amplitude, count, seed=0):
    """`count` copies of `atoms` with Gaussian displacements of `amplitude` A."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        frame = atoms.copy()
        frame.positions += rng.normal(scale=amplitude, size=frame.positions.shape)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def model(models):
    return MaceModel(models["committee"][0])


@pytest.fixture(scope="module")
def training(cu_bulk_module):
    return rattled(cu_bulk_module, 0.08, 40, seed=1)


@pytest.fixture(scope="module")
def cu_bulk_module():
    from ase.build import bulk

    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)


def test_features_times_readout_weights_give_the_atomic_energies(model, cu_bulk):
    features = LastLayerFeatures(model)
    graph = model.graph(cu_bulk)
    output = model.evaluate(graph, compute_stress=False)
    readout = (features.features() @ features.weights).detach().numpy()
    # the fixed ZBL pair repulsion, scaled like the readouts, is not a learned weight
    module = model.module
    _, lengths = get_edge_vectors_and_lengths(graph["positions"], graph["edge_index"],
                                              graph["shifts"])
    pair = module.pair_repulsion_fn(lengths, graph["node_attrs"], graph["edge_index"],
                                    module.atomic_numbers)
    scale = float(module.scale_shift.scale)
    assert np.ptp(pair.detach().numpy()) > 1e-6  # the test would be blind without the term
    offset = output["node_energy"].detach().numpy() - readout - scale * pair.detach().numpy()
    np.testing.assert_allclose(offset, offset[0], atol=1e-10)  # E0 + shift, the same for all Cu


def test_adding_a_structure_raises_its_prediction_rigidity_by_exactly_one(model, training,
                                                                          cu_bulk):
    # seed 000, Appendix B: with the energy loss, PR' = PR + 1 after adding the sample itself
    estimator = LastLayerLPR.fit(model, training, forces=False, progress=False)
    regularizer = 1e-4 * np.linalg.eigvalsh(estimator.hessian)[-1]
    estimator = LastLayerLPR(model, estimator.hessian, regularizer=regularizer, forces=False)
    before = estimator.rigidity(cu_bulk)
    estimator.update([cu_bulk])
    assert estimator.rigidity(cu_bulk) - before == pytest.approx(1.0, abs=1e-8)


def test_force_terms_are_the_position_derivatives_of_the_summed_features(model):
    from ase.build import bulk

    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.rattle(0.05, seed=7)
    features = LastLayerFeatures(model)
    energy_only = gauss_newton(model, features, [cell], False, 1.0, False)
    with_forces = gauss_newton(model, features, [cell], True, 1.0, False)
    force_term = with_forces - energy_only

    def summed(atoms):
        with torch.no_grad():
            model.module(model.graph(atoms), compute_force=False)
            return features.features().sum(dim=0).numpy()

    step = 1e-5
    jacobian = []
    for atom in range(len(cell)):
        for axis in range(3):
            plus, minus = cell.copy(), cell.copy()
            plus.positions[atom, axis] += step
            minus.positions[atom, axis] -= step
            jacobian.append((summed(plus) - summed(minus)) / (2 * step))
    jacobian = np.array(jacobian).T
    np.testing.assert_allclose(force_term, jacobian @ jacobian.T, rtol=1e-5,
                               atol=1e-7 * np.abs(force_term).max())


def test_automatic_regularizer_is_the_smallest_well_conditioned_one(model, training):
    hessian = LastLayerLPR.fit(model, training[:5], forces=False, progress=False).hessian
    regularizer = choose_regularizer(hessian)
    eigenvalues = np.linalg.eigvalsh(hessian)
    assert (eigenvalues[-1] + regularizer) / (eigenvalues[0] + regularizer) <= MAX_CONDITION
    smaller = regularizer / 10
    assert (eigenvalues[0] + smaller <= 0 or
            (eigenvalues[-1] + smaller) / (eigenvalues[0] + smaller) > MAX_CONDITION)


def test_prediction_matches_mace_and_uncertainty_is_scale_over_sqrt_lpr(models, llpr, cu_bulk):
    prediction = llpr.predict(cu_bulk)
    with trusted_pickle_loads():  # mace's calculator loads the model pickle bare
        reference = MACECalculator(model_paths=models["committee"][0], device="cpu",
                                   default_dtype="float64")
    cu_bulk.calc = reference
    assert prediction.energy == pytest.approx(cu_bulk.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(prediction.forces, cu_bulk.get_forces(), atol=1e-10)
    rigidity = llpr.atomic_rigidity(cu_bulk)
    np.testing.assert_allclose(prediction.extra["atomic_rigidity"], rigidity, rtol=1e-10)
    np.testing.assert_allclose(prediction.atomic_uncertainty, llpr.scale / np.sqrt(rigidity),
                               rtol=1e-10)


def test_surface_atoms_are_less_rigid_than_centre_atoms(llpr, cu_slab, slab_regions):
    rigidity = llpr.atomic_rigidity(cu_slab)
    outer, centre = slab_regions
    assert rigidity[centre].mean() > 2 * rigidity[outer].mean()


def test_save_and_load_round_trip(model, training, tmp_path, cu_bulk):
    estimator = LastLayerLPR.fit(model, training[:3], forces=True, scale=0.5, progress=False)
    estimator.save(tmp_path / "llpr.npz")
    loaded = LastLayerLPR.load(tmp_path / "llpr.npz", model=model.path)
    np.testing.assert_array_equal(loaded.hessian, estimator.hessian)
    assert (loaded.regularizer, loaded.scale, loaded.forces) == (estimator.regularizer, 0.5, True)
    np.testing.assert_allclose(loaded.atomic_rigidity(cu_bulk), estimator.atomic_rigidity(cu_bulk))


def test_loading_with_another_model_is_refused(models, llpr, tmp_path):
    llpr.save(tmp_path / "llpr.npz")
    with pytest.raises(ValueError, match="fitted for another model"):
        LastLayerLPR.load(tmp_path / "llpr.npz", model=models["committee"][1])


def test_bad_llpr_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        LastLayerLPR.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("no numbers here")
    with pytest.raises(ValueError, match="cannot read LLPR file"):
        LastLayerLPR.load(tmp_path / "bad.npz")


def test_fit_reads_structures_from_a_file_and_refuses_an_empty_set(model, training, tmp_path):
    import ase.io

    ase.io.write(tmp_path / "train.extxyz", training[:3])
    from_file = LastLayerLPR.fit(model, tmp_path / "train.extxyz", forces=False, progress=False)
    from_list = LastLayerLPR.fit(model, training[:3], forces=False, progress=False)
    # extxyz rounds positions to 1e-8 A
    np.testing.assert_allclose(from_file.hessian, from_list.hessian, rtol=1e-5,
                               atol=1e-8 * np.abs(from_list.hessian).max())
    with pytest.raises(ValueError, match="no structures"):
        LastLayerLPR.fit(model, [], progress=False)
    with pytest.raises(ValueError, match="regularizer must be a positive number"):
        LastLayerLPR.fit(model, training[:3], regularizer=0.0, progress=False)
