"""Shared fixtures: the real bundled tiny MACE models and small Cu structures."""

import pytest
from ase.build import bulk, fcc100

import mdmonitor
from mdmonitor import Committee, LastLayerLPR


@pytest.fixture(scope="session")
def models():
    return mdmonitor.demo_models()


@pytest.fixture(scope="session")
def committee(models):
    return Committee.from_mace(models["committee"])


@pytest.fixture(scope="session")
def llpr(models):
    return LastLayerLPR.load(models["llpr"])


@pytest.fixture
def cu_bulk():
    """32-atom fcc Cu, thermally rattled."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture
def cu_slab():
    """Cu(100) slab of 2 x 2 x 4 layers (16 atoms) with vacuum, periodic cell."""
    atoms = fcc100("Cu", size=(2, 2, 4), a=3.61, vacuum=6.0, periodic=True)
    atoms.rattle(0.05, seed=4)
    return atoms

