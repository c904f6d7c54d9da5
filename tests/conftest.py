"""Shared fixtures: the real bundled tiny MACE models and small Cu structures."""

import os

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc100

import mdmonitor
from mdmonitor import LTAU, Committee, LastLayerLPR, LatentGMM

# One torch thread: the test models are tiny, and with two threads a busy second core slowed
# force calls 5-25 fold (measured). The processes the tests start (examples, mace trainers,
# LAMMPS runs) likewise run on one: the Langevin example took 45 s of CPU on two threads for
# the 29 s it takes on one.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"


# The test files that take longest (measured with --durations=0 in a whole run under load about
# 4, seconds per file: the Heid study's quick mode 270, test_learning 215, test_loop 230,
# parallel labeling 210, the plugin 195 with its build, 100-110 each down to test_loop_labeling,
# then 35-60), collected first so that `pytest -n 2 --dist loadfile` starts them first instead of
# leaving one for the end on one process.
LONGEST_FIRST = ("examples/test_heid_water_study.py", "learn/test_learning.py",
                 "learn/test_loop.py", "labeling/test_parallel_labeling.py",
                 "lammps/test_plugin.py", "cli/test_newcomer.py", "learn/test_loop_faults.py",
                 "learn/test_loop_labeling.py", "cli/test_commands.py",
                 "lammps/test_thresholds.py", "common/test_freed_memory.py",
                 "test_aggregation.py", "labeling/test_labeling_log.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        path = item.nodeid.split("::")[0].removeprefix("tests/")
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # (stable: the other files keep their order)


@pytest.fixture(scope="session")
def models():
    return mdmonitor.demo_models()


@pytest.fixture(scope="session")
def committee(models):
    return Committee.from_mace(models["committee"])


@pytest.fixture(scope="session")
def llpr(models):
    return LastLayerLPR.load(models["llpr"])


@pytest.fixture(scope="session")
def ltau(models):
    return LTAU.load(models["ltau"])


@pytest.fixture(scope="session")
def gmm(models):
    return LatentGMM.load(models["gmm"])


@pytest.fixture
def cu_bulk():
    """32-atom fcc Cu, thermally rattled."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture
def cu_slab():
    """Cu(100) slab of 2 x 2 x 6 layers (24 atoms) with vacuum, periodic cell, rattled."""
    atoms = fcc100("Cu", size=(2, 2, 6), a=3.61, vacuum=6.0, periodic=True)
    atoms.rattle(0.05, seed=4)
    return atoms


@pytest.fixture
def slab_regions(cu_slab):
    """Masks of the outer two layers on each side and of the two centre layers of `cu_slab`."""
    z = cu_slab.positions[:, 2]
    layer = np.round((z - z.min()) / (3.61 / 2)).astype(int)
    return (layer <= 1) | (layer >= 4), (layer == 2) | (layer == 3)

