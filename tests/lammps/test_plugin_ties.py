"""fix mdmonitor on the symmetric demo slab (96 atoms, 16 per layer, unrattled), on one rank and
under `mpirun -np 2`: exact ties of the local uncertainty go to the smallest atom ID, and
atoms equivalent by symmetry get bit-identical local values from bit-identical atomic ones."""

import numpy as np
import pytest

from mdmonitor import aggregate
from mdmonitor.demo import demo_slab
from mdmonitor.lammps.plugin import build
from tests.lammps_support import (
    exported,
    read_dump,
    read_thermo,
    run_lammps,
    write_data,
)


@pytest.fixture(scope="module", autouse=True)
def plugin():
    """The plugin of the current sources (an incremental CMake build: quick when up to date)."""
    return build()


def run_on_slab(directory, kind: str, source: str, ranks: int):
    """Thermo row and dump frame of `run 0` on the demo slab with fix mdmonitor (cutoff 4 A)."""
    write_data(demo_slab(), directory / "slab.data")
    script = f"""units metal
atom_style atomic
read_data slab.data
pair_style mdmonitor {exported(kind)}
pair_coeff * * Cu
variable height atom 0.1*ln(z)*z
fix mon all mdmonitor 1 cutoff 4.0 threshold 0.0 {source}
dump d all custom 1 atoms.dump id z f_mon[1] f_mon[2]
dump_modify d sort id format float %.17g
thermo_style custom step f_mon[1] f_mon[2]
thermo_modify format float %.17g
run 0
"""
    run_lammps(script, directory, ranks)
    return read_thermo(directory)[0], read_dump(directory / "atoms.dump")[0]


def test_equivalent_atoms_tie_exactly_and_the_smallest_id_wins_on_any_number_of_ranks(
        tmp_path):
    """An atomic value that depends on the height alone (bit-identical in a layer): every atom
    of a layer has the same local value bit for bit, on one and two ranks, and the maximum's
    atom is the smallest ID of the top layer (a sum in neighbour-list order gave atom 85)."""
    atoms = demo_slab()
    z = atoms.positions[:, 2]
    expected = aggregate(atoms, 0.1 * np.log(z) * z, 4.0)
    top = np.isclose(expected, expected.max(), rtol=1e-12, atol=0.0)
    assert top.sum() == 16
    results = [run_on_slab(tmp_path, "llpr", "source v_height", ranks) for ranks in (1, 2)]
    for thermo, frame in results:
        assert thermo["f_mon[2]"] == np.flatnonzero(top)[0] + 1 == 81
        local = frame["f_mon[2]"]
        for height in np.unique(frame["z"]):
            assert len(np.unique(local[frame["z"] == height])) == 1, height
        assert np.allclose(local, expected, rtol=1e-14, atol=0.0)
    (_, one_rank), (_, two_ranks) = results
    assert np.array_equal(one_rank["f_mon[2]"], two_ranks["f_mon[2]"])


@pytest.mark.parametrize("kind", ["committee", "llpr"])
def test_the_models_uncertainty_breaks_ties_in_its_last_bits(tmp_path, kind):
    """The model's atomic uncertainty of equivalent atoms (the slab's two surfaces) differs in
    the last bits, and differently on the periodic graph of one rank and the ghost atoms of two:
    the maximum agrees to 1e-14 and its atom is the smallest ID among the atoms with exactly the
    maximum, which may be a different one of the equivalent atoms (the rule the README states)."""
    maxima = []
    for ranks in (1, 2):
        thermo, frame = run_on_slab(tmp_path, kind, "", ranks)
        local = frame["f_mon[2]"]
        assert thermo["f_mon[1]"] == local.max()
        assert thermo["f_mon[2]"] == frame["id"][local == local.max()].min()
        maxima.append(thermo["f_mon[1]"])
    assert maxima[1] == pytest.approx(maxima[0], rel=1e-14)
