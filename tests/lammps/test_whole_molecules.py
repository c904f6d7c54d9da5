"""`fix mdmonitor ... extract cube ... molecules yes` on liquid-like water in LAMMPS, on one and
two ranks (a molecule's atoms may be owned by different ranks): the box is
cut_cube(..., molecules=True) of the same frame, every oxygen with both its hydrogens; with
`centres O`, centred on the most uncertain oxygen. The pair
style runs two untrained H/O MACE models (random weights, seeded): only the elements and the
model files matter to the cut; the uncertainty source is an atom-style variable (aggregated
within 0.5 A: each atom alone)."""

import ase.io
import numpy as np
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


def source_atoms(box):
    """{(source atom, its image, in the core)} of a box."""
    return {(int(i), *map(int, s), bool(c)) for i, s, c in zip(
        box.arrays["source_index"], box.arrays["source_image"], box.arrays["core_mask"])}


# an oxygen; a hydrogen, whose cube takes a molecule with a hydrogen beyond the cube's reach
# (L sqrt(3) / 2), which the fix gathers only by looking 2 A further
def cut_by_lammps(directory, water_pair, frame, variable, ranks, more=""):
    """The one box `fix mdmonitor` writes for `frame` with atom-style `variable` (its formula)
    as the uncertainty."""
    directory.mkdir(exist_ok=True)
    ase.io.write(directory / "water.data", frame, format="lammps-data", specorder=["H", "O"],
                 masses=True)
    script = f"""units metal
atom_style atomic
read_data water.data
pair_style mdmonitor {water_pair}
pair_coeff * * H O
variable u atom {variable}
fix mon all mdmonitor 1 cutoff 0.5 source v_u threshold 0.0 &
    extract cube core {CORE} box {BOX} queue queue run_id water molecules yes {more}
run 0
"""
    run_lammps(script, directory, ranks)
    [path] = CandidateQueue(directory / "queue").boxes()
    return ase.io.read(path)


def source_atoms(box):
    """{(source atom, its image, in the core)} of a box."""
    return {(int(i), *map(int, s), bool(c)) for i, s, c in zip(
        box.arrays["source_index"], box.arrays["source_image"], box.arrays["core_mask"])}


# an oxygen; a hydrogen, whose cube takes a molecule with a hydrogen beyond the cube's reach
# (L sqrt(3) / 2), which the fix gathers only by looking 2 A further
@pytest.mark.parametrize("centre, ranks", [(30, 1), (55, 2)])
def test_the_fix_cuts_whole_waters_as_python_does(tmp_path, water_pair, centre, ranks):
    frame = water_box()
    box = cut_by_lammps(tmp_path, water_pair, frame, f"id=={centre + 1}", ranks)
    assert box.info["molecules"] is True and box.info["centre_index"] == centre
    expected = cut_cube(frame, centre, CORE, box_length=BOX, molecules=True)
    assert source_atoms(box) == source_atoms(expected)
    assert len(box) == len(expected) and (box.numbers == 1).sum() == 2 * (box.numbers == 8).sum()
    atoms_only = cut_cube(frame, centre, CORE, box_length=BOX)
    assert set(atoms_only.arrays["source_index"]) != set(box.arrays["source_index"])


def test_centres_o_centres_the_box_on_the_most_uncertain_oxygen(tmp_path, water_pair):
    """The uncertainty peaks on hydrogen 55: without `centres` the box is centred there, with
    `centres O` on the oxygen of largest value, as Extractor(centre_elements=["O"])."""
    frame = water_box()
    x, y, z = map(float, frame.positions[55])
    peak = f"exp(-((x-{x!r})^2+(y-{y!r})^2+(z-{z!r})^2)/2.0)"
    values = np.exp(-np.sum((frame.positions - frame.positions[55]) ** 2, axis=1) / 2.0)
    oxygen = np.flatnonzero(frame.numbers == 8)
    assert cut_by_lammps(tmp_path / "any", water_pair, frame, peak, 2).info["centre_index"] == 55
    box = cut_by_lammps(tmp_path / "oxygen", water_pair, frame, peak, 2, "centres O")
    assert box.info["centre_index"] == oxygen[np.argmax(values[oxygen])]
