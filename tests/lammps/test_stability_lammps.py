"""Close contacts in LAMMPS: the C++ core's close_contacts equals mdmonitor.stability's, and
fix mdmonitor's f_ID[5] (atoms in close contact) equals the Python monitor's flag on the same
frame, on one and two ranks, with the pair style's elements or elements from the masses; a bad
`contact` factor stops LAMMPS naming the keyword."""

import re

import numpy as np
import pytest
from ase.build import fcc100
from ase.data import covalent_radii

from mdmonitor import MonitoredCalculator
from mdmonitor.lammps.plugin import build
from mdmonitor.stability import close_contacts
from tests.lammps.test_cpp_core import driver, lammps_layout, numbers, random_cell  # noqa: F401
from tests.lammps_support import exported, read_thermo, run_lammps, write_data
from tests.test_stability import pushed_together


@pytest.mark.parametrize("seed, factor", [(0, 0.5), (1, 0.5), (2, 0.8)])
def test_close_contacts_equal_python(driver, seed, factor):  # noqa: F811
    """Random triclinic cells of H, O and Cu, mixed pbc: pairs by ghost images too."""
    rng = np.random.default_rng(seed)
    atoms = random_cell(rng, 24, pbc=[True, seed != 1, True])
    atoms.numbers = rng.choice([1, 8, 29], len(atoms))
    expected = close_contacts(atoms, factor)[0]
    assert 0 < len(expected) < len(atoms)
    positions, owner, first, second = lammps_layout(atoms, 2 * factor * covalent_radii[29])
    radius = covalent_radii[atoms.numbers[owner]]
    lines = [f"contacts {len(positions)} {len(atoms)} {numbers(factor)}"]
    lines += [numbers(*x, r) for x, r in zip(positions, radius)]
    for i in range(len(atoms)):
        neighbours = second[first == i]
        lines.append(f"{i} {len(neighbours)} " + " ".join(map(str, neighbours)))
    assert sorted(map(int, driver("\n".join(lines)))) == expected.tolist()


@pytest.fixture(scope="module")
def plugin():
    """The plugin of the current sources (an incremental CMake build: quick when up to date)."""
    return build()


def squeezed_slab(pairs):
    """Cu(100) slab, 2 x 2 x 6 (24 atoms), each (i, j, d) of `pairs` with atom j moved to d A
    from atom i, shifted by -0.8 A along y and wrapped into the cell (so that atoms 0 and 2
    meet across the cell's y face)."""
    atoms = fcc100("Cu", size=(2, 2, 6), a=3.61, vacuum=6.0, periodic=True)
    atoms.rattle(0.05, seed=4)
    for i, j, distance in pairs:
        atoms = pushed_together(atoms, i, j, distance)
    atoms.translate([0.0, -0.8, 0.0])
    atoms.wrap()
    return atoms


CASES = {  # atoms moved together: atoms in close contact
    "no contact": ([], 0),
    "one pair across a periodic face": ([(0, 2, 1.1)], 2),
    "three atoms": ([(4, 5, 1.0), (4, 8, 1.25)], 3),
}


def python_flags(llpr, atoms) -> int:
    """Atoms in close contact by MonitoredCalculator's on_instability (0 when none)."""
    seen = []
    atoms.calc = MonitoredCalculator(llpr, cutoff=4.0, on_instability=seen.append)
    atoms.get_forces()
    return len(seen[0].indices) if seen else 0


@pytest.mark.parametrize("ranks", [1, 2])
def test_fix_counts_the_atoms_the_python_monitor_flags(tmp_path, plugin, llpr, ranks):
    """Each case's frame in turn (`clear` between them) in one LAMMPS run."""
    script = ""
    for k, (name, (pairs, flagged)) in enumerate(CASES.items()):
        atoms = squeezed_slab(pairs)
        assert python_flags(llpr, atoms) == flagged, name
        write_data(atoms, tmp_path / f"case{k}.data")
        script += f"""clear
units metal
atom_style atomic
read_data case{k}.data
pair_style mdmonitor {exported('llpr')}
pair_coeff * * Cu
fix mon all mdmonitor 1 cutoff 4.0
variable contacts equal f_mon[5]
run 0
print "case {k} contacts ${{contacts}}"
"""
    crossing = squeezed_slab(CASES["one pair across a periodic face"][0])
    assert crossing.get_distance(0, 2) > 3.0 and crossing.get_distance(0, 2, mic=True) < 1.2
    done = run_lammps(script, tmp_path, ranks)
    found = re.findall(r"^case (\d) contacts (\S+)$", done.stdout, re.MULTILINE)
    assert [(int(k), float(n)) for k, n in found] == [
        (k, flagged) for k, (_, flagged) in enumerate(CASES.values())]


def test_elements_come_from_the_masses_under_another_pair_style(tmp_path, plugin):
    """pair_style zero: Cu from the type's mass; 1.1 A is a contact at 0.45 x 2.64 = 1.19 A and
    not at 0.4 x 2.64 = 1.06 A."""
    atoms = squeezed_slab([(0, 2, 1.1)])
    assert [len(close_contacts(atoms, f)[0]) for f in (0.4, 0.45)] == [0, 2]
    write_data(atoms, tmp_path / "cell.data")
    script = """units metal
atom_style atomic
read_data cell.data
pair_style zero 4.0
pair_coeff * *
variable one atom 1.0
fix narrow all mdmonitor 1 cutoff 3.0 source v_one contact 0.4
fix wide all mdmonitor 1 cutoff 3.0 source v_one contact 0.45
thermo_style custom step f_narrow[5] f_wide[5]
run 0
"""
    run_lammps(script, tmp_path)
    thermo = read_thermo(tmp_path)[0]
    assert (thermo["f_narrow[5]"], thermo["f_wide[5]"]) == (0, 2)


@pytest.mark.parametrize("value, message", [
    ("-0.5", "contact must be > 0, not -0.5"),
    ("1.5", "contact must be < 1 (a fraction of the sum of covalent radii"),
])
def test_a_bad_contact_factor_stops_lammps_naming_the_keyword(tmp_path, plugin, value, message):
    write_data(squeezed_slab([]), tmp_path / "cell.data")
    script = f"""units metal
atom_style atomic
read_data cell.data
pair_style mdmonitor {exported('llpr')}
pair_coeff * * Cu
fix mon all mdmonitor 1 cutoff 4.0 contact {value}
run 0
"""
    done = run_lammps(script, tmp_path, check=False)
    assert done.returncode != 0
    assert message in done.stdout, done.stdout[-2000:]
