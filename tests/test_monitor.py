"""MonitoredCalculator: a drop-in ASE calculator that aggregates, logs and triggers."""

import csv

import numpy as np
import pytest
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.optimize import BFGS

from mdmonitor import MonitoredCalculator, UncertaintyLimitExceeded, aggregate
from mdmonitor.monitor_log import COLUMNS


def read_log(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_twenty_step_langevin_run_is_monitored_every_step(committee, cu_bulk, tmp_path):
    calc = MonitoredCalculator(committee, cutoff=4.0, log=tmp_path / "monitor.csv",
                               timestep=2 * units.fs)
    cu_bulk.calc = calc
    Langevin(cu_bulk, 2 * units.fs, temperature_K=900, friction=0.01 / units.fs, fixcm=False,
             rng=np.random.default_rng(0)).run(20)
    rows = read_log(tmp_path / "monitor.csv")
    assert [int(r["step"]) for r in rows] == list(range(21))
    assert float(rows[-1]["time_fs"]) == pytest.approx(40.0)
    local = calc.results["local_uncertainty"]
    np.testing.assert_allclose(local, aggregate(cu_bulk, calc.results["atomic_uncertainty"], 4.0))
    assert float(rows[-1]["max_local_uncertainty"]) == pytest.approx(local.max(), rel=1e-6)
    assert int(rows[-1]["max_local_atom"]) == int(np.argmax(local))
    assert float(rows[-1]["mean_local_uncertainty"]) == pytest.approx(local.mean(), rel=1e-6)
    assert calc.results["stress"].shape == (6,)


def test_forces_and_energy_are_the_estimator_s(committee, cu_bulk):
    cu_bulk.calc = MonitoredCalculator(committee, cutoff=4.0)
    prediction = committee.predict(cu_bulk)
    np.testing.assert_allclose(cu_bulk.get_forces(), prediction.forces)
    assert cu_bulk.get_potential_energy() == pytest.approx(prediction.energy)
    np.testing.assert_allclose(cu_bulk.calc.results["atomic_uncertainty"],
                               prediction.atomic_uncertainty)


def test_interval_monitors_every_nth_force_call(llpr, cu_bulk, tmp_path):
    cu_bulk.calc = MonitoredCalculator(llpr, cutoff=3.0, interval=3, log=tmp_path / "m.csv")
    BFGS(cu_bulk, logfile=None).run(fmax=1e-6, steps=7)
    steps = [int(r["step"]) for r in read_log(tmp_path / "m.csv")]
    assert steps == [s for s in range(cu_bulk.calc.step) if s % 3 == 0]


def test_threshold_calls_back_with_the_atoms_above_it_most_uncertain_first(committee, cu_slab):
    triggers = []
    local = aggregate(cu_slab, committee.predict(cu_slab).atomic_uncertainty, 4.0)
    threshold = float(np.median(local))
    cu_slab.calc = MonitoredCalculator(committee, cutoff=4.0, threshold=threshold,
                                       callbacks=[triggers.append])
    cu_slab.get_forces()
    (trigger,) = triggers
    expected = np.flatnonzero(local > threshold)
    assert sorted(trigger.indices) == sorted(expected)
    assert np.all(np.diff(trigger.local_uncertainty[trigger.indices]) <= 0)
    assert trigger.step == 0 and len(trigger.atoms) == len(cu_slab)


def test_no_callback_below_threshold(committee, cu_bulk):
    triggers = []
    cu_bulk.calc = MonitoredCalculator(committee, cutoff=4.0, threshold=1e6,
                                       callbacks=[triggers.append])
    cu_bulk.get_forces()
    assert triggers == []


def test_stop_threshold_ends_the_run_naming_atom_and_value_after_logging(committee, cu_slab,
                                                                        tmp_path):
    cu_slab.calc = MonitoredCalculator(committee, cutoff=4.0, stop_threshold=1e-6,
                                       log=tmp_path / "m.csv")
    dyn = Langevin(cu_slab, units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False)
    with pytest.raises(UncertaintyLimitExceeded, match="at atom .* exceeds stop_threshold") as stop:
        dyn.run(10)
    local = cu_slab.calc.results["local_uncertainty"]
    assert stop.value.atom == int(np.argmax(local))
    assert stop.value.value == pytest.approx(local.max())
    assert stop.value.step == 0
    assert len(read_log(tmp_path / "m.csv")) == 1


def test_log_is_appended_on_restart_and_a_foreign_file_is_refused(llpr, cu_bulk, tmp_path):
    log = tmp_path / "m.csv"
    for _ in range(2):
        cu_bulk.calc = MonitoredCalculator(llpr, cutoff=4.0, log=log)
        cu_bulk.get_forces()
        cu_bulk.positions[0, 0] += 0.01
    assert log.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert len(read_log(log)) == 2
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="not an mdmonitor log"):
        MonitoredCalculator(llpr, cutoff=4.0, log=foreign)
    assert foreign.read_text() == "a,b,c\n1,2,3\n"


def test_cluster_without_cell_has_no_stress(committee):
    cluster = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]])
    cluster.calc = MonitoredCalculator(committee, cutoff=4.0)
    assert cluster.get_forces().shape == (4, 3)
    assert "stress" not in cluster.calc.results


@pytest.mark.parametrize("kwargs, message", [
    ({"cutoff": 0.0}, "cutoff must be a positive number"),
    ({"cutoff": float("nan")}, "cutoff must be a positive number"),
    ({"cutoff": 4.0, "threshold": -1.0}, "threshold must be a positive number"),
    ({"cutoff": 4.0, "interval": 0}, "interval must be a positive integer"),
])
def test_bad_settings_are_refused_by_name(committee, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MonitoredCalculator(committee, **kwargs)


def test_a_log_of_an_earlier_version_without_the_calibration_column_is_refused(llpr, tmp_path):
    earlier = tmp_path / "m.csv"
    earlier.write_text(",".join(COLUMNS[:-1]) + "\n0,,0.1,3,0.05,0.2,0,\n")
    with pytest.raises(ValueError, match="log of an earlier mdmonitor, without the calibration "
                                         "column; choose another log file"):
        MonitoredCalculator(llpr, cutoff=4.0, log=earlier)
    assert earlier.read_text().count("\n") == 2
