"""Overlapping atoms (two at one position) are refused before a model sees them, naming the pair
and its distance (the model gave "non-finite energy: NaN or inf"); the search for close pairs
that the stability criteria share equals ase's neighbour list."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from mdmonitor import MonitoredCalculator
from mdmonitor.common.geometry import check_structure, close_pairs
from mdmonitor.estimators.mace_model import MaceModel

OVERLAP = r"atoms 5 \(Cu\) and 17 \(Cu\) are 0 A apart, closer than 0.1 x the sum of their "


def overlapping(cu_bulk):
    atoms = cu_bulk.copy()
    atoms.positions[17] = atoms.positions[5]
    return atoms


def test_overlapping_atoms_stop_the_ase_calculator_before_the_model(committee, cu_bulk):
    atoms = overlapping(cu_bulk)
    atoms.calc = MonitoredCalculator(committee, cutoff=4.0)
    with pytest.raises(ValueError, match="the atoms at force call 0: " + OVERLAP):
        atoms.get_potential_energy()


def test_overlapping_atoms_stop_mace_model_predict(models, cu_bulk):
    with pytest.raises(ValueError, match="the structure: " + OVERLAP):
        MaceModel(models["committee"][0]).predict(overlapping(cu_bulk))


def test_an_atom_on_the_periodic_image_of_another_overlaps_too(cu_bulk):
    atoms = cu_bulk.copy()
    atoms.positions[3] = atoms.positions[0] + atoms.cell[1] + 0.01
    with pytest.raises(ValueError, match=r"atoms 0 \(Cu\) and 3 \(Cu\) are 0.0173 A apart"):
        check_structure(atoms)


def test_physical_structures_pass(cu_bulk):
    for atoms in (cu_bulk, molecule("H2"), molecule("CH4"), bulk("Si", cubic=True)):
        check_structure(atoms)


def ase_pairs(atoms, cutoff):
    i, j, d = neighbor_list("ijd", atoms, cutoff, self_interaction=False)
    return sorted((a, b, round(x, 9)) for a, b, x in zip(i, j, d) if a < b)


@pytest.mark.parametrize("pbc, cell", [
    ((True, True, True), [[7.0, 0, 0], [1.5, 6.5, 0], [0.8, -1.2, 6.8]]),
    ((True, False, True), [[7.0, 0, 0], [0, 0, 0], [2.0, 0, 6.5]]),
    ((False, False, False), [[0, 0, 0]] * 3),
])
def test_close_pairs_equal_ase_s_neighbour_list(pbc, cell):
    rng = np.random.default_rng(7)
    atoms = Atoms("Cu60", positions=rng.uniform(-1, 8, (60, 3)), cell=cell, pbc=pbc)
    factor = 0.9  # 2.38 A for Cu-Cu: many pairs, also across the faces
    i, j, d = close_pairs(atoms, factor)
    found = sorted((a, b, round(x, 9)) for a, b, x in zip(i, j, d))
    assert len(found) > 20 and found == ase_pairs(atoms, factor * 2 * 1.32)
