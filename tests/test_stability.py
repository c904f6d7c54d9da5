"""Instability detection (seed 004 Sec. 2.5): close contacts, broken bonds, a kinetic-energy
blow-up and NaN are flagged in the results and the log, handed to on_instability, and raised on
request (always for NaN), with the real bundled models."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.md.velocitydistribution import thermalize_momenta

from mdmonitor import MonitoredCalculator
from mdmonitor.monitor_log import read_log
from mdmonitor.stability import Instability, StabilityCriteria, close_contacts


def pushed_together(atoms, first=0, second=1, distance=1.0):
    """`atoms` with atom `second` moved to `distance` A from atom `first`, towards it."""
    atoms = atoms.copy()
    direction = atoms.get_distance(first, second, mic=True, vector=True)
    atoms.positions[second] = (atoms.positions[first]
                               + direction / np.linalg.norm(direction) * distance)
    return atoms


def test_a_close_contact_is_flagged_and_a_normal_frame_is_not(llpr, cu_bulk, tmp_path):
    calc = MonitoredCalculator(llpr, cutoff=4.0, log=tmp_path / "m.csv")
    cu_bulk.calc = calc
    cu_bulk.get_forces()
    assert calc.results["instability"] == ""
    squeezed = pushed_together(cu_bulk, 0, 1, distance=1.2)  # Cu-Cu limit: 0.5 x 2.64 = 1.32 A
    squeezed.calc = calc
    squeezed.get_forces()
    assert calc.results["instability"] == "close-contact"
    rows = read_log(tmp_path / "m.csv")
    assert [r["instability"] for r in rows] == ["", "close-contact"]
    assert rows[1]["step"] == 1.0 and rows[1]["max_local_uncertainty"] > 0


def test_close_contacts_names_the_two_atoms_also_across_a_periodic_face(cu_bulk):
    cu_bulk.positions[5] = cu_bulk.positions[0] - [0.9, 0.0, 0.0]  # outside the cell, x < 0
    cu_bulk.wrap()
    touching, closest = close_contacts(cu_bulk, 0.5)
    assert touching.tolist() == [0, 5]
    assert closest == pytest.approx(0.9)
    assert close_contacts(cu_bulk, 0.3)[0].tolist() == []  # 0.3 x 2.64 = 0.79 A < 0.9 A


def test_on_instability_gets_the_frame_and_the_run_goes_on_unless_told_to_stop(llpr, cu_bulk,
                                                                               tmp_path):
    seen = []
    squeezed = pushed_together(cu_bulk, 3, 7, distance=1.1)
    squeezed.calc = MonitoredCalculator(llpr, cutoff=4.0, on_instability=seen.append)
    squeezed.get_forces()
    (instability,) = seen
    assert instability.codes == ("close-contact",) and instability.step == 0
    assert instability.indices.tolist() == [3, 7]
    assert instability.atoms.get_distance(3, 7, mic=True) == pytest.approx(1.1)
    assert "closest 1.100 A apart" in str(instability)

    squeezed.calc = MonitoredCalculator(llpr, cutoff=4.0, on_instability=seen.append,
                                        stop_on_instability=True, log=tmp_path / "m.csv")
    with pytest.raises(Instability, match="unstable MD at step 0: 2 atoms closer than 0.5 x"):
        squeezed.get_forces()
    assert len(seen) == 2
    assert read_log(tmp_path / "m.csv")[0]["instability"] == "close-contact"  # logged first


def test_no_stability_checks_when_turned_off(llpr, cu_bulk):
    squeezed = pushed_together(cu_bulk, distance=1.1)
    squeezed.calc = MonitoredCalculator(llpr, cutoff=4.0, stability=False,
                                        stop_on_instability=True)
    squeezed.get_forces()
    assert squeezed.calc.results["instability"] == ""


def test_nan_positions_after_the_first_step_are_raised_as_an_instability(llpr, cu_bulk,
                                                                         tmp_path):
    seen = []
    cu_bulk.calc = MonitoredCalculator(llpr, cutoff=4.0, on_instability=seen.append,
                                       log=tmp_path / "m.csv")
    cu_bulk.get_forces()
    cu_bulk.positions[4, 2] = np.nan
    with pytest.raises(Instability, match=r"step 1: positions not finite \(first at atom 4\)"):
        cu_bulk.get_forces()  # raised although stop_on_instability is off: no forces to go on
    assert seen[0].codes == ("non-finite",) and seen[0].indices.tolist() == [4]
    assert read_log(tmp_path / "m.csv")[1]["instability"] == "non-finite"


def test_two_atoms_in_one_place_are_named_before_the_model_gives_nan(llpr, cu_bulk):
    cu_bulk.calc = MonitoredCalculator(llpr, cutoff=4.0)
    cu_bulk.get_forces()
    cu_bulk.positions[1] = cu_bulk.positions[0]
    overlap = r"force call 1: atoms 0 \(Cu\) and 1 \(Cu\) are 0 A apart"
    with pytest.raises(ValueError, match=overlap):
        cu_bulk.get_forces()
    with pytest.raises(ValueError, match=overlap):  # no stale results for the same atoms
        cu_bulk.get_forces()


def test_a_kinetic_energy_blow_up_is_flagged(llpr, cu_bulk):
    thermalize_momenta(cu_bulk, 300, rng=np.random.default_rng(1))
    start = cu_bulk.get_temperature()
    calc = MonitoredCalculator(llpr, cutoff=4.0)
    cu_bulk.calc = calc
    cu_bulk.get_forces()
    cu_bulk.positions[0, 0] += 0.01
    cu_bulk.set_momenta(cu_bulk.get_momenta() * np.sqrt(9.0))  # 9 x start: below 10 x
    cu_bulk.get_forces()
    assert calc.results["instability"] == ""
    cu_bulk.positions[0, 0] += 0.01
    cu_bulk.set_momenta(cu_bulk.get_momenta() * np.sqrt(11.0 / 9.0))
    cu_bulk.get_forces()
    assert calc.results["instability"] == "hot"
    assert cu_bulk.get_temperature() == pytest.approx(11 * start)


@pytest.mark.parametrize("criteria, flagged", [
    (StabilityCriteria(temperature_factor=3.0, temperature_K=100.0), "hot"),
    (StabilityCriteria(), ""),  # no target, a start at 0 K: no reference, no check
])
def test_the_target_temperature_sets_the_limit_when_the_run_starts_cold(llpr, cu_bulk, criteria,
                                                                        flagged):
    cu_bulk.set_momenta(np.zeros((len(cu_bulk), 3)))
    calc = MonitoredCalculator(llpr, cutoff=4.0, stability=criteria)
    cu_bulk.calc = calc
    cu_bulk.get_forces()
    thermalize_momenta(cu_bulk, 1000, exact_temperature=True, rng=np.random.default_rng(2))
    cu_bulk.positions[0, 0] += 0.01  # (momenta alone do not make ASE call the calculator)
    cu_bulk.get_forces()
    assert calc.results["instability"] == flagged


def water_pair():
    atoms = molecule("H2O") + molecule("H2O")
    atoms.positions[3:] += [3.0, 0.0, 0.0]
    return atoms


def test_bonds_of_the_first_frame_break_when_stretched():
    atoms = water_pair()
    criteria = StabilityCriteria(bonds="start", bond_stretch=1.5)
    assert criteria.check(atoms) == []
    assert criteria._bond_pairs.tolist() == [[0, 1], [0, 2], [3, 4], [3, 5]]
    atoms.positions[4] += (atoms.positions[4] - atoms.positions[3]) * 0.6  # O-H 1.6 x
    (finding,) = criteria.check(atoms)
    assert finding.code == "bond-broken" and finding.indices.tolist() == [3, 4]


def test_given_bonds_are_the_only_ones_checked():
    atoms = water_pair()
    criteria = StabilityCriteria(bonds=[[0, 1]])
    criteria.check(atoms)
    atoms.positions[4] += (atoms.positions[4] - atoms.positions[3]) * 0.6
    assert criteria.check(atoms) == []
    with pytest.raises(ValueError, match="bonds name atoms outside 0..5"):
        StabilityCriteria(bonds=[[0, 9]]).check(atoms)


@pytest.mark.parametrize("kwargs, message", [
    ({"contact_factor": -0.5}, "contact_factor must be a positive fraction, got -0.5"),
    ({"contact_factor": 1.5}, "contact_factor must be below 1"),
    ({"contact_factor": "half"}, "contact_factor must be a positive fraction"),
    ({"temperature_factor": 0.5}, "temperature_factor must be above 1"),
    ({"temperature_K": -300.0}, "temperature_K must be a positive temperature in K"),
    ({"bond_stretch": 1.0}, "bond_stretch must be above 1"),
    ({"bonds": [0, 1, 2]}, r"bonds must be 'start' or an \(M, 2\) array of atom indices"),
    ({"bonds": "molecules"}, r"bonds must be 'start' or an \(M, 2\) array"),
])
def test_bad_criteria_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StabilityCriteria(**kwargs)


def test_bad_stability_settings_of_the_calculator_are_refused(llpr):
    with pytest.raises(TypeError, match="stability must be a StabilityCriteria, True or False"):
        MonitoredCalculator(llpr, cutoff=4.0, stability="strict")
    with pytest.raises(TypeError, match="on_instability must be a function"):
        MonitoredCalculator(llpr, cutoff=4.0, on_instability="print")


def test_a_cluster_without_cell_is_checked_too(llpr):
    cluster = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 1.0, 0]])
    cluster.calc = MonitoredCalculator(llpr, cutoff=4.0)
    cluster.get_forces()
    assert cluster.calc.results["instability"] == "close-contact"
