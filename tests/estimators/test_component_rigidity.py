"""Component-wise prediction rigidity (CPR) of the readouts of a MACE model (seed 000, Sec. 5)."""

import numpy as np
import pytest
from ase.build import bulk, fcc100

from mdmonitor import LastLayerLPR
from mdmonitor.estimators.mace_model import MaceModel
from tests.untrained_mace import untrained_mace


@pytest.fixture(scope="module")
def model(models):
    return MaceModel(models["committee"][0])


@pytest.fixture(scope="module")
def llpr(models):
    return LastLayerLPR.load(models["llpr"])


@pytest.fixture
def slab():
    atoms = fcc100("Cu", size=(2, 2, 4), a=3.61, vacuum=5.0, periodic=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def with_hessian(llpr, model, hessian):
    return LastLayerLPR(model, hessian, llpr.regularizer, llpr.forces, llpr.force_weight)


def block_diagonal(llpr):
    """The LLPR's matrix with the couplings between readouts set to zero: orthogonal components."""
    hessian = np.zeros_like(llpr.hessian)
    for block in llpr.features.blocks:
        hessian[block, block] = llpr.hessian[block, block]
    return hessian


def test_one_component_per_readout_in_blocks_that_tile_the_features(llpr):
    blocks = llpr.features.blocks
    assert len(blocks) == len(llpr.model.module.readouts) == 2
    assert [(b.start, b.stop) for b in blocks] == [(0, 16), (16, 32)]


def test_for_orthogonal_components_the_inverse_rigidities_add_up(llpr, model, slab):
    # 1/PR = g^T H^-1 g with g = sum_C g_C; with no coupling between the blocks the cross terms
    # vanish, so 1/PR = sum_C 1/CPR_C, for the structure and for every atom
    orthogonal = with_hessian(llpr, model, block_diagonal(llpr))
    assert 1 / orthogonal.rigidity(slab) == pytest.approx(
        np.sum(1 / orthogonal.component_rigidity(slab)), rel=1e-9)
    np.testing.assert_allclose(1 / orthogonal.atomic_rigidity(slab),
                               np.sum(1 / orthogonal.atomic_component_rigidity(slab), axis=1),
                               rtol=1e-9)
    # the fitted matrix couples the readouts (their features are nearly collinear): there the
    # sum does not hold, the split of the energy between them is loose and each CPR far below
    coupled = np.sum(1 / llpr.component_rigidity(slab))
    assert coupled > 10 / llpr.rigidity(slab)


def test_a_single_readout_model_has_its_component_rigidity_equal_to_the_prediction_rigidity(
        tmp_path):
    untrained_mace(tmp_path / "single.model", [29], [-3.0])
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    training = [cell.copy() for _ in range(5)]
    for seed, frame in enumerate(training):
        frame.rattle(0.1, seed=seed)
    single = LastLayerLPR.fit(MaceModel(tmp_path / "single.model"), training, progress=False)
    assert len(single.features.blocks) == 1
    test = cell.repeat((2, 1, 1))
    test.rattle(0.07, seed=9)
    assert single.component_rigidity(test) == pytest.approx([single.rigidity(test)], rel=1e-12)
    np.testing.assert_allclose(single.atomic_component_rigidity(test)[:, 0],
                               single.atomic_rigidity(test), rtol=1e-12)


@pytest.mark.parametrize("component", [0, 1])
def test_data_only_one_component_explains_raise_its_rigidity_by_exactly_one(llpr, model, slab,
                                                                             component):
    # seed 000 App. B for a component: add the datum "E_C of this slab" (g_C g_C^T in H);
    # its CPR rises by one. Orthogonal components: the other component's CPR does not move.
    block = llpr.features.blocks[component]
    for hessian in (llpr.hessian, block_diagonal(llpr)):
        before = with_hessian(llpr, model, hessian)
        g = np.zeros(llpr.features.dim)
        g[block] = before.atomic_features(slab).sum(axis=0)[block]
        after = with_hessian(llpr, model, hessian + np.outer(g, g))
        rise = after.component_rigidity(slab) - before.component_rigidity(slab)
        assert rise[component] == pytest.approx(1.0, rel=1e-6)
    other = 1 - component
    assert after.component_rigidity(slab)[other] == pytest.approx(
        before.component_rigidity(slab)[other], rel=1e-9)


def test_component_rigidity_is_one_over_the_restricted_gradient_in_the_inverse_matrix(llpr,
                                                                                      slab):
    structure, atomic = llpr.component_rigidity(slab), llpr.atomic_component_rigidity(slab)
    assert structure.shape == (2,) and atomic.shape == (len(slab), 2)
    matrix = llpr.hessian + llpr.regularizer * np.eye(llpr.features.dim)
    features = llpr.atomic_features(slab)
    for c, block in enumerate(llpr.features.blocks):
        restricted = np.zeros_like(features)
        restricted[:, block] = features[:, block]
        total = restricted.sum(axis=0)
        assert structure[c] == pytest.approx(1 / (total @ np.linalg.solve(matrix, total)),
                                             rel=1e-6)
        expected = 1 / np.einsum("jd,dj->j", restricted, np.linalg.solve(matrix, restricted.T))
        np.testing.assert_allclose(atomic[:, c], expected, rtol=1e-6)


def test_a_readout_s_local_rigidity_is_a_monitor_source(models, slab):
    from mdmonitor import MonitoredCalculator
    from mdmonitor.lammps.export import export

    llpr = LastLayerLPR.load(models["llpr"])
    expected = 1 / np.sqrt(llpr.atomic_component_rigidity(slab)[:, 1])
    llpr.component = 1
    assert llpr.unit == "1/sqrt(CPR_1)"
    slab.calc = MonitoredCalculator(llpr, cutoff=4.0)
    slab.get_forces()
    np.testing.assert_allclose(slab.calc.results["atomic_uncertainty"], expected, rtol=1e-10)
    with pytest.raises(ValueError, match="CPR .*monitored in ASE only"):
        export(llpr, "never.pt")
    for bad in (2, -1, 1.0, True):
        with pytest.raises(ValueError, match="readout index 0-1"):
            llpr.component = bad
    llpr.component = None
    assert llpr.unit == "1/sqrt(LPR)"
