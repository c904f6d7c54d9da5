"""Committee: spread of MACE members (shared graph) or of any ASE calculators."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from mace.calculators import MACECalculator

from mdmonitor import Committee
from mdmonitor.common.trusted_pickles import trusted_pickle_loads
from mdmonitor.estimators.prediction import force_uncertainty


def test_committee_from_files_equals_committee_of_mace_calculators(models, committee, cu_bulk):
    with trusted_pickle_loads():  # mace's calculator loads the model pickles bare
        calculators = [MACECalculator(model_paths=p, device="cpu", default_dtype="float64")
                       for p in models["committee"]]
    from_files = committee.predict(cu_bulk)
    from_calcs = Committee(calculators).predict(cu_bulk)
    assert from_files.energy == pytest.approx(from_calcs.energy, rel=1e-12)
    np.testing.assert_allclose(from_files.forces, from_calcs.forces, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(from_files.stress, from_calcs.stress, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(from_files.atomic_uncertainty, from_calcs.atomic_uncertainty,
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(from_files.extra["atomic_energy_uncertainty"],
                               from_calcs.extra["atomic_energy_uncertainty"], rtol=1e-9)


def test_dynamics_follow_the_committee_mean(committee, cu_bulk):
    prediction = committee.predict(cu_bulk)
    members = prediction.extra["forces_contributions"]
    assert members.shape == (4, len(cu_bulk), 3)
    np.testing.assert_allclose(prediction.forces, members.mean(axis=0))
    assert prediction.energy == pytest.approx(prediction.extra["energy_contributions"].mean())
    assert prediction.extra["energies"].sum() == pytest.approx(prediction.energy, rel=1e-10)


def test_force_uncertainty_is_unbiased_std_averaged_over_xyz():
    # two members: the unbiased std of {a, b} is |a - b| / sqrt(2)
    first = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    second = np.array([[0.3, 0.0, -0.3], [1.0, -1.0, 0.5]])
    expected = np.array([0.6, 1.0]) / np.sqrt(2) / 3
    np.testing.assert_allclose(force_uncertainty(np.stack([first, second])), expected)


def test_identical_members_have_zero_uncertainty_and_atomic_energies(cu_bulk):
    prediction = Committee([EMT(), EMT()]).predict(cu_bulk)
    np.testing.assert_array_equal(prediction.atomic_uncertainty, 0.0)
    np.testing.assert_array_equal(prediction.extra["atomic_energy_uncertainty"], 0.0)
    assert prediction.stress is not None


def test_surface_atoms_are_more_uncertain_than_centre_atoms(committee, cu_slab, slab_regions):
    # the bundled models saw bulk Cu only: a surface is outside their training domain
    uncertainty = committee.predict(cu_slab).atomic_uncertainty
    outer, centre = slab_regions
    assert uncertainty[outer].mean() > 1.5 * uncertainty[centre].mean()


def _modified_model(path, tmp_path, change):
    model = torch.load(path, weights_only=False)
    change(model)
    target = tmp_path / "modified.model"
    torch.save(model, target)
    return target


def test_members_with_another_cutoff_are_refused(models, tmp_path):
    other = _modified_model(models["committee"][1], tmp_path, lambda m: m.r_max.fill_(5.0))
    with pytest.raises(ValueError, match="disagree on cutoff.*4.0 A.*5.0 A"):
        Committee.from_mace([models["committee"][0], other])


def test_members_with_other_elements_are_refused(models, tmp_path):
    other = _modified_model(models["committee"][1], tmp_path,
                            lambda m: m.atomic_numbers.fill_(79))
    with pytest.raises(ValueError, match=r"disagree on elements.*Cu.*Au"):
        Committee.from_mace([models["committee"][0], other])


def test_unknown_element_is_named_with_the_model_elements(committee, cu_bulk):
    cu_bulk.symbols[3] = "Au"
    with pytest.raises(ValueError, match=r"\['Au'\] not known to model.*\['Cu'\]"):
        committee.predict(cu_bulk)


class NaNForces(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        forces = np.zeros((len(atoms), 3))
        forces[5, 1] = np.nan
        self.results = {"energy": 0.0, "forces": forces}


def test_non_finite_member_output_names_the_member_and_atom(cu_bulk):
    with pytest.raises(FloatingPointError, match=r"member 1 \(NaNForces\).*forces.*atom 5"):
        Committee([EMT(), NaNForces()]).predict(cu_bulk)


def test_missing_and_unreadable_model_files_are_reported(models, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.model"):
        Committee.from_mace([models["committee"][0], tmp_path / "nowhere.model"])
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="cannot read MACE model file.*garbage.model"):
        Committee.from_mace([models["committee"][0], garbage])


def test_a_committee_needs_two_members_and_atoms(models, committee):
    with pytest.raises(ValueError, match="at least two members"):
        Committee.from_mace(models["committee"][:1])
    with pytest.raises(ValueError, match="no atoms"):
        committee.predict(Atoms())


@pytest.mark.parametrize("spoil", ["nan position", "zero cell"])
def test_an_estimator_called_directly_refuses_a_broken_structure_before_the_graph(committee, llpr,
                                                                                  cu_bulk, spoil):
    """The neighbour search of MACE's graph hangs for minutes on NaN positions: never reach it."""
    atoms = cu_bulk.copy()
    if spoil == "nan position":
        atoms.positions[3, 1] = np.nan
        message = "the structure: positions .*atom 3"
    else:
        atoms.cell[:] = 0.0
        message = "the structure: cell is degenerate"
    for estimator in (committee, llpr):
        with pytest.raises(ValueError, match=message):
            estimator.predict(atoms)
