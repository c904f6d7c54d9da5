"""Reading structures and their reference labels."""

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from mdmonitor.common.structures import load_structures, reference_forces


def test_reference_forces_prefer_ref_forces_then_stored_results_never_stale_ones(cu_bulk):
    stored = np.full((len(cu_bulk), 3), 0.5)
    atoms = cu_bulk.copy()
    atoms.calc = SinglePointCalculator(atoms, forces=stored)
    assert np.array_equal(reference_forces(atoms), stored)  # the extxyz "forces" column
    atoms.arrays["REF_forces"] = np.ones((len(atoms), 3))
    assert np.array_equal(reference_forces(atoms), np.ones((len(atoms), 3)))
    atoms.arrays["DFT_f"] = np.full((len(atoms), 3), 2.0)
    assert reference_forces(atoms, "DFT_f")[0, 0] == 2.0
    del atoms.arrays["REF_forces"]
    atoms.positions[0] += 0.1  # the stored forces belong to other positions now
    with pytest.raises(ValueError, match="frame 0 has no reference forces"):
        reference_forces(atoms)


def test_structures_come_from_a_file_one_atoms_or_a_list(cu_bulk, tmp_path):
    path = tmp_path / "two.extxyz"
    ase.io.write(path, [cu_bulk, cu_bulk])
    assert len(load_structures(path)) == 2
    assert load_structures(cu_bulk)[0] is cu_bulk
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_structures(tmp_path / "missing.extxyz")
    with pytest.raises(ValueError, match="no structures given"):
        load_structures([])
