"""A committee with a driver: the dynamics is one model's on every step, and the other members are
evaluated only on the monitored steps, where the uncertainty is the plain committee's."""

import ase.io
import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from mace.calculators import MACECalculator

from mdmonitor import Committee, MonitoredCalculator
from mdmonitor.cli import main
from mdmonitor.common.trusted_pickles import trusted_pickle_loads
from mdmonitor.estimators.mace_model import MaceModel
from mdmonitor.extraction.relaxation import ForceFieldCalculator

INTERVAL = 3


@pytest.fixture(scope="module", params=["member", "file"])
def driven(request, models):
    """(committee with a driver, the plain committee of the same members, the driver alone):
    driven by member 1 of the four, or by a separate file (member 3) next to members 0-2."""
    paths = models["committee"]
    if request.param == "member":
        members, driver = paths, 1
    else:
        members, driver = paths[:3], paths[3]
    alone = MaceModel(paths[driver] if request.param == "member" else driver)
    return (Committee.from_mace(members, driver=driver), Committee.from_mace(members), alone)


def count_evaluations(monkeypatch, models) -> dict:
    """{model name: number of network evaluations}, counted around the real MaceModel.evaluate."""
    counts = {m.name: 0 for m in models}
    for model in models:
        def counted(*args, model=model, real=model.evaluate, **kwargs):
            counts[model.name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(model, "evaluate", counted)
    return counts


def nve(atoms, calc, steps: int) -> list:
    """Velocity Verlet of `atoms` with `calc`: per step (positions, forces, total energy,
    results)."""
    atoms = atoms.copy()
    thermalize_momenta(atoms, 600, rng=np.random.default_rng(1))
    atoms.calc = calc
    frames = []
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    dyn.attach(lambda: frames.append((atoms.positions.copy(), atoms.get_forces().copy(),
                                      atoms.get_total_energy(), dict(calc.results))))
    dyn.run(steps)
    return frames


def test_monitored_steps_have_the_plain_committee_uncertainty_and_others_none(driven, cu_slab):
    committee, plain, _ = driven
    frames = nve(cu_slab, MonitoredCalculator(committee, cutoff=4.0, interval=INTERVAL), 7)
    for step, (positions, _, _, results) in enumerate(frames):
        if step % INTERVAL:  # not monitored: no uncertainty at all, never an earlier one
            assert "atomic_uncertainty" not in results and "local_uncertainty" not in results
            continue
        atoms = cu_slab.copy()
        atoms.positions = positions
        reference = MonitoredCalculator(plain, cutoff=4.0)
        atoms.calc = reference
        atoms.get_forces()
        for name in ("atomic_uncertainty", "local_uncertainty", "energy_uncertainty",
                     "atomic_energy_uncertainty"):
            np.testing.assert_allclose(results[name], reference.results[name], rtol=1e-12,
                                       atol=1e-15)
        assert results["atomic_uncertainty"].max() > 1e-3  # (a real spread, not zeros)


def test_forces_of_every_step_are_the_driver_alone(driven, cu_slab):
    committee, _, alone = driven
    frames = nve(cu_slab, MonitoredCalculator(committee, cutoff=4.0, interval=INTERVAL), 5)
    atoms = cu_slab.copy()
    for positions, forces, _, results in frames:
        atoms.positions = positions
        own = alone.predict(atoms)
        np.testing.assert_allclose(forces, own.forces, rtol=1e-12, atol=1e-14)
        assert results["energy"] == pytest.approx(own.energy, rel=1e-13)
        np.testing.assert_allclose(results["stress"], own.stress, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(results["energies"], own.atomic_energies, rtol=1e-12)


def test_trajectory_is_the_drivers_and_conserves_energy(driven, cu_bulk):
    """NVE driven through the monitor (members every third step) follows the driver alone step
    by step: the forces never switch between the mean and the driver."""
    committee, _, alone = driven
    monitored = nve(cu_bulk, MonitoredCalculator(committee, cutoff=4.0, interval=INTERVAL), 12)
    single = nve(cu_bulk, ForceFieldCalculator(alone), 12)
    for (x, _, energy, _), (x_alone, _, energy_alone, _) in zip(monitored, single):
        np.testing.assert_allclose(x, x_alone, rtol=0, atol=1e-10)
        assert energy == pytest.approx(energy_alone, abs=1e-9)
    total = np.array([energy for _, _, energy, _ in monitored])
    assert np.ptp(total) < 2e-3 * len(cu_bulk)  # eV: 1 fs steps of a smooth potential


def test_only_the_driver_runs_on_steps_that_are_not_monitored(driven, cu_slab, monkeypatch):
    committee, _, _ = driven
    everyone = committee.models + ([] if isinstance(committee.driver, int) else [committee.driver])
    driver = (committee.models[committee.driver] if isinstance(committee.driver, int)
              else committee.driver)
    counts = count_evaluations(monkeypatch, everyone)
    calc = MonitoredCalculator(committee, cutoff=4.0, interval=INTERVAL)
    atoms = cu_slab.copy()
    atoms.calc = calc
    per_step = []
    for step in range(2 * INTERVAL):
        before = dict(counts)
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()
        per_step.append({name: counts[name] - before[name] for name in counts})
    for step, done in enumerate(per_step):
        if step % INTERVAL:
            assert done == {name: int(name == driver.name) for name in done}, step
        else:  # every member once, and a separate driver once more
            assert done == {name: 1 for name in done}, step


def test_committee_driven_by_its_mean_is_unchanged(models, committee, cu_slab):
    """The default: every member on every step, forces the mean, uncertainty on every step."""
    assert committee.driver is None and committee.driven_by == "the committee mean"
    calc = MonitoredCalculator(committee, cutoff=4.0, interval=INTERVAL)
    frames = nve(cu_slab, calc, 2)
    for _, forces, _, results in frames:
        np.testing.assert_allclose(forces, results["forces_contributions"].mean(axis=0))
        assert "atomic_uncertainty" in results


def test_committee_of_ase_calculators_driven_by_a_member(models, cu_bulk):
    with trusted_pickle_loads():
        calculators = [MACECalculator(model_paths=p, device="cpu", default_dtype="float64")
                       for p in models["committee"][:2]]
    committee = Committee(calculators, driver=1)
    plain = Committee(calculators).predict(cu_bulk)
    full, forces_only = committee.predict(cu_bulk), committee.predict(cu_bulk, uncertainty=False)
    np.testing.assert_allclose(full.atomic_uncertainty, plain.atomic_uncertainty, rtol=1e-12)
    np.testing.assert_allclose(full.forces, plain.extra["forces_contributions"][1], rtol=1e-12)
    np.testing.assert_allclose(forces_only.forces, full.forces, rtol=1e-12, atol=1e-14)
    assert forces_only.atomic_uncertainty is None


@pytest.mark.parametrize("driver, message", [
    (4, r"driver member 4 is not in this committee of 4 \(members 0 to 3\)"),
    (-1, r"driver member -1 is not in this committee of 4"),
    (True, "driver must be a member index, a MACE model file or a MaceModel, not bool"),
    (2.0, "driver must be a member index, a MACE model file or a MaceModel, not float"),
])
def test_a_driver_that_is_no_member_is_refused(models, driver, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Committee.from_mace(models["committee"], driver=driver)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.r_max.fill_(5.0), "the committee and its driving model disagree on cutoff.*"
                                   "4.0 A.*5.0 A"),
    (lambda m: m.atomic_numbers.fill_(79), r"the committee and its driving model disagree on "
                                           r"elements.*\['Cu'\].*\['Au'\]"),
])
def test_a_driver_file_for_another_cutoff_or_elements_is_refused(models, tmp_path, change,
                                                                   message):
    model = torch.load(models["committee"][3], weights_only=False)
    change(model)
    torch.save(model, tmp_path / "production.model")
    with pytest.raises(ValueError, match=message):
        Committee.from_mace(models["committee"][:3], driver=tmp_path / "production.model")
    with pytest.raises(FileNotFoundError, match="nowhere.model"):
        Committee.from_mace(models["committee"][:3], driver=tmp_path / "nowhere.model")


def test_md_command_drives_with_a_member_and_logs_every_interval(models, cu_bulk, tmp_path,
                                                                 capsys):
    ase.io.write(tmp_path / "start.extxyz", cu_bulk)
    log = tmp_path / "monitor.csv"
    code = main(["md", str(tmp_path / "start.extxyz"), "--committee", *models["committee"],
                 "--drive", "member:2", "--interval", "2", "--steps", "4", "--log", str(log),
                 "--trajectory", str(tmp_path / "t.extxyz")])
    assert code == 0
    assert "dynamics driven by member 2 ('cu_committee_2.model')" in capsys.readouterr().out
    steps = [line.split(",")[0] for line in log.read_text().splitlines()[1:]]
    assert steps == ["0", "2", "4"]


@pytest.mark.parametrize("arguments, message", [
    (["--llpr", "LLPR", "--drive", "member:0"], "--drive chooses what drives a committee's "
                                                "dynamics: give --committee"),
    (["--committee", "A", "B", "--drive", "member:x"], "argument --drive: member:K needs a "
                                                       "member index K = 0, 1, ..., not 'x'"),
])
def test_md_command_refuses_a_drive_it_cannot_use(models, cu_bulk, tmp_path, capsys, arguments,
                                                   message):
    ase.io.write(tmp_path / "start.extxyz", cu_bulk)
    arguments = [models["llpr"] if a == "LLPR" else a for a in arguments]
    try:
        code = main(["md", str(tmp_path / "start.extxyz"), *arguments, "--steps", "0",
                     "--log", str(tmp_path / "m.csv"), "--trajectory", str(tmp_path / "t.xyz")])
    except SystemExit as done:  # argparse's usage error
        code = done.code
    assert code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()
