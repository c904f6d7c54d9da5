"""Element-relative LLPR: 1/LPR over the mean 1/LPR of the training atoms of the same element,
in Python, in its file and in the LAMMPS export."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from mdmonitor import LastLayerLPR
from mdmonitor.lammps.export import export
from tests.lammps_support import (
    evaluate,
    export_directory,
    periodic_graph,
    relative_error,
)


@pytest.fixture(scope="module")
def training(models):
    import ase.io

    return ase.io.read(models["training_set"], ":12")


@pytest.fixture(scope="module")
def relative(models, training):
    estimator = LastLayerLPR.load(models["llpr"])
    estimator.relative_to_elements(training)
    return estimator


def test_relative_uncertainty_is_the_raw_one_over_the_element_mean(llpr, relative, training):
    inverse = np.concatenate([1 / llpr.atomic_rigidity(a) for a in training])
    assert relative.element_reference == pytest.approx({29: inverse.mean()}, rel=1e-12)
    atoms = training[0]
    raw, scaled = llpr.predict(atoms), relative.predict(atoms)
    assert scaled.atomic_uncertainty == pytest.approx(
        raw.atomic_uncertainty / np.sqrt(inverse.mean()), rel=1e-12)
    # the raw LPR stays available
    assert scaled.extra["atomic_rigidity"] == pytest.approx(raw.extra["atomic_rigidity"])
    # on the reference atoms the mean squared relative uncertainty is 1 for every element
    squares = np.concatenate([relative.predict(a).atomic_uncertainty**2 for a in training])
    assert squares.mean() == pytest.approx(1.0, rel=1e-10)
    assert relative.unit == "1/sqrt(LPR/<LPR>_element)"


def test_the_reference_is_saved_and_changes_the_state_hash(llpr, relative, tmp_path, models):
    path = tmp_path / "relative.npz"
    relative.save(path)
    again = LastLayerLPR.load(path, model=models["committee"][0])
    assert again.element_reference == relative.element_reference
    assert again.state_sha256() == relative.state_sha256() != llpr.state_sha256()


def test_an_element_without_reference_is_refused(relative):
    gold = bulk("Au", "fcc", a=4.08, cubic=True)
    with pytest.raises(ValueError, match=r"no element reference for atomic number\(s\) \[79\]"):
        relative._relative(np.ones(4), gold.numbers)


def test_fit_can_make_it_relative_to_the_training_atoms(models, training):
    fitted = LastLayerLPR.fit(models["committee"][0], training[:4], progress=False,
                              element_relative=True)
    squares = np.concatenate([fitted.predict(a).atomic_uncertainty**2 for a in training[:4]])
    assert squares.mean() == pytest.approx(1.0, rel=1e-10)


def test_the_lammps_export_gives_the_relative_uncertainty(relative):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=5)
    path = export(relative, export_directory() / "relative-llpr.pt")
    module = torch.jit.load(str(path))
    out = evaluate(module, atoms, [periodic_graph(atoms, module.r_max)])
    assert relative_error(out["atomic_uncertainty"],
                          relative.predict(atoms).atomic_uncertainty) < 1e-8
