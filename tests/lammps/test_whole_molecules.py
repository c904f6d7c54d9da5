"""`fix mdmonitor ... extract cube ... molecules yes` on liquid-like water in LAMMPS, on one and
two ranks (a molecule's atoms may be owned by different ranks): the box is
cut_cube(..., molecules=True) of the same frame, every oxygen with both its hydrogens. The pair
style runs two untrained H/O MACE models (random weights, seeded): only the elements and the
model files matter to the cut; the uncertainty source is an atom-style variable that is 1 on the
chosen centre only (aggregated within 0.5 A: each atom alone)."""

import ase.io
import pytest

from mdmonitor import Committee
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.extraction.cutting import cut_cube
from mdmonitor.lammps.export import export
from tests.extraction.test_cutting import water_box
from tests.lammps_support import run_lammps
from tests.untrained_mace import untrained_mace

CORE, BOX = 2.6, 8.0  # A


@pytest.fixture(scope="module")
def water_pair(tmp_path_factory):
    directory = tmp_path_factory.mktemp("water-models")
    members = [untrained_mace(directory / f"water_{k}.model", [1, 8], [-13.6, -432.0], seed=k)
               for k in range(2)]
    return export(Committee.from_mace(members), directory / "water.pt")


# an oxygen; a hydrogen, whose cube takes a molecule with a hydrogen beyond the cube's reach
# (L sqrt(3) / 2), which the fix gathers only by looking 2 A further
@pytest.mark.parametrize("centre, ranks", [(30, 1), (55, 2)])
def test_the_fix_cuts_whole_waters_as_python_does(tmp_path, water_pair, centre, ranks):
    frame = water_box()
    ase.io.write(tmp_path / "water.data", frame, format="lammps-data", specorder=["H", "O"],
                 masses=True)
    script = f"""units metal
atom_style atomic
read_data water.data
pair_style mdmonitor {water_pair}
pair_coeff * * H O
variable chosen atom id=={centre + 1}
fix mon all mdmonitor 1 cutoff 0.5 source v_chosen threshold 0.0 &
    extract cube core {CORE} box {BOX} queue queue run_id water molecules yes
run 0
"""
    run_lammps(script, tmp_path, ranks)
    [path] = CandidateQueue(tmp_path / "queue").boxes()
    box = ase.io.read(path)
    assert box.info["molecules"] is True and box.info["centre_index"] == centre
    expected = cut_cube(frame, centre, CORE, box_length=BOX, molecules=True)
    found = {(int(i), *map(int, s), bool(c)) for i, s, c in zip(
        box.arrays["source_index"], box.arrays["source_image"], box.arrays["core_mask"])}
    assert found == {(int(i), *map(int, s), bool(c)) for i, s, c in zip(
        expected.arrays["source_index"], expected.arrays["source_image"],
        expected.arrays["core_mask"])}
    assert len(box) == len(expected) and (box.numbers == 1).sum() == 2 * (box.numbers == 8).sum()
    atoms_only = cut_cube(frame, centre, CORE, box_length=BOX)
    assert set(atoms_only.arrays["source_index"]) != set(box.arrays["source_index"])
