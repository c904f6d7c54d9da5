"""fix mdmonitor and pair_style mdmonitor refuse numbers out of range when the fix is defined,
naming the keyword, refuse a cube far larger than the cell before cutting anything, and warn
when an atom type's mass is not that of the element pair_coeff maps it to."""

import pytest

from mdmonitor.demo import demo_slab
from mdmonitor.lammps.plugin import build
from tests.lammps_support import exported, run_lammps, write_data


@pytest.fixture(scope="module", autouse=True)
def plugin():
    """The plugin of the current sources (an incremental CMake build: quick when up to date)."""
    return build()


def slab_script(directory, lines: str) -> str:
    """The demo's 96-atom Cu(100) slab with the LLPR pair style, then `lines`."""
    write_data(demo_slab(), directory / "slab.data")
    return (f"units metal\natom_style atomic\nread_data slab.data\n"
            f"pair_style mdmonitor {exported('llpr')}\npair_coeff * * Cu\n{lines}\n")


FIX = "fix mon all mdmonitor"
EXTRACT = "threshold 0.1 extract cube core 2.0 box 6.0 queue queue"
OUT_OF_RANGE = {
    "negative threshold": (f"{FIX} 1 cutoff 4.0 threshold -1", "threshold must be >= 0, not -1"),
    "negative cutoff": (f"{FIX} 1 cutoff -4", "cutoff must be > 0, not -4"),
    "interval beyond int": (f"{FIX} 99999999999 cutoff 4.0",
                            "N must be a positive integer up to 2147483647, not 99999999999"),
    "source column beyond int": (f"{FIX} 1 cutoff 4.0 source c_ke[99999999999]",
                                 ("source column must be a positive integer up to "
                                  "2147483647, not 99999999999")),
    "source column 0": (f"{FIX} 1 cutoff 4.0 source c_ke[0]",
                        "source column must be a positive integer up to 2147483647, not 0"),
    "negative separation": (f"{FIX} 1 cutoff 4.0 {EXTRACT} separation -1",
                            "separation must be >= 0, not -1"),
    "max_boxes beyond int": (f"{FIX} 1 cutoff 4.0 {EXTRACT} max_boxes 99999999999",
                             "max_boxes must be a positive integer up to 2147483647"),
    "cooldown 0": (f"{FIX} 1 cutoff 4.0 {EXTRACT} cooldown 0",
                   "cooldown must be a positive integer up to 2147483647, not 0"),
    "core 0": (f"{FIX} 1 cutoff 4.0 threshold 0.1 extract cube core 0 box 6.0 queue q",
               "core must be > 0, not 0"),
    "molecules maybe": (f"{FIX} 1 cutoff 4.0 {EXTRACT} molecules maybe",
                        "molecules must be yes or no, not 'maybe'"),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE)
def test_numbers_out_of_range_stop_lammps_naming_the_keyword(tmp_path, case):
    line, message = OUT_OF_RANGE[case]
    done = run_lammps(slab_script(tmp_path, line), tmp_path, check=False)
    assert done.returncode != 0
    assert f"ERROR: Illegal fix mdmonitor command: {message}" in done.stdout, done.stdout[-2000:]
    assert "Exception" not in done.stdout + done.stderr


def test_a_box_far_larger_than_the_cell_is_refused_before_any_step(tmp_path):
    """`box 1000` around the 96-atom slab (2609 A^3) once gathered 12 GB of periodic images:
    a box spans at most 8 cell volumes, an edge of 2 x 2609^(1/3) = 27.53 A here."""
    script = slab_script(tmp_path, f"{FIX} 1 cutoff 4.0 threshold 0.0 extract cube core 2.0 "
                                   "box 1000 queue queue\nrun 0")
    done = run_lammps(script, tmp_path, check=False)
    assert done.returncode != 0
    assert ("extract box 1000 A is far larger than the simulation cell (2609.03 A^3): a box "
            "spans at most 8 cell volumes, so its edge is at most 27.5332 A here") in done.stdout
    assert not (tmp_path / "queue").exists()
    within = slab_script(tmp_path, f"{FIX} 1 cutoff 4.0 threshold 0.0 extract cube core 2.0 "
                                   "box 27.5 queue queue\nrun 0")
    run_lammps(within, tmp_path)
    assert len(list((tmp_path / "queue" / "pending").iterdir())) == 1


def test_centres_of_an_element_no_type_has_are_refused_before_any_step(tmp_path):
    script = slab_script(tmp_path, f"{FIX} 1 cutoff 4.0 {EXTRACT} centres O\nrun 0")
    done = run_lammps(script, tmp_path, check=False)
    assert done.returncode != 0
    assert ("ERROR: fix mdmonitor: centres O: no atom type is of that element (pair_coeff maps "
            "Cu)") in done.stdout


@pytest.mark.parametrize("mass_line, warned", [
    ("", None),                      # the data file's mass of Cu
    ("mass 1 63", None),             # 0.9 % off: within the tolerance of 1 %
    ("mass 1 65", "Zn"),             # 2.3 % off, nearest zinc's 65.38
    ("mass 1 196.967", "Au"),        # a gold type mapped to Cu
])
def test_a_type_whose_mass_is_another_elements_is_warned_of(tmp_path, mass_line, warned):
    done = run_lammps(slab_script(tmp_path, f"{mass_line}\nrun 0"), tmp_path)
    warnings = [line for line in done.stdout.splitlines() if "pair_style mdmonitor: atom type"
                in line]
    if warned is None:
        assert warnings == []
    else:
        [warning] = warnings
        assert (f"WARNING: pair_style mdmonitor: atom type 1 has mass {mass_line.split()[-1]} "
                "but pair_coeff maps it to Cu (standard mass 63.546, more than 1% off; the "
                f"nearest standard mass is {warned}'s): check the order of the elements in "
                "pair_coeff") in warning
        assert warning in (tmp_path / "log.lammps").read_text()
