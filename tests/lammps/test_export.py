"""The exported TorchScript estimator, fed graphs as LAMMPS builds them, gives the Python
estimators' energies, forces, virial and per-atom uncertainty."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.stress import voigt_6_to_full_3x3_stress

from mdmonitor.cli import main
from tests.lammps_support import (
    evaluate,
    export_directory,
    exported,
    ghost_graph,
    periodic_graph,
    relative_error,
)

RTOL = 1e-8


@pytest.fixture(scope="module", params=["committee", "llpr"])
def pair(request, committee, llpr):
    """(estimator, exported module) for both kinds."""
    estimator = committee if request.param == "committee" else llpr
    return estimator, torch.jit.load(str(exported(request.param)))


def small_bulk():
    """8-atom fcc cell: r_max = 4 A is beyond half the cell, so atoms see their own images."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=5)
    return atoms


def assert_same_as_python(out, prediction, atoms):
    virial = voigt_6_to_full_3x3_stress(-prediction.stress * atoms.get_volume())
    lammps_order = virial[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]
    assert abs(out["energy"] - prediction.energy) <= RTOL * abs(prediction.energy)
    assert relative_error(out["energies"], prediction.extra["energies"]) < RTOL
    assert relative_error(out["forces"], prediction.forces) < RTOL
    assert relative_error(out["virial"], lammps_order) < RTOL
    assert relative_error(out["atomic_uncertainty"], prediction.atomic_uncertainty) < RTOL


def test_periodic_graph_without_ghosts_matches_python(pair):
    estimator, module = pair
    atoms = small_bulk()
    out = evaluate(module, atoms, [periodic_graph(atoms, module.r_max)])
    assert_same_as_python(out, estimator.predict(atoms), atoms)


def test_two_ranks_with_ghost_atoms_match_python(pair, cu_slab):
    """Atoms split between two 'ranks' by height; each sees the rest as ghost atoms out to
    num_interactions x r_max; forces and member forces are summed onto owners."""
    estimator, module = pair
    atoms = cu_slab
    upper = atoms.positions[:, 2] > np.median(atoms.positions[:, 2])
    reach = module.num_interactions * module.r_max
    graphs = [ghost_graph(atoms, np.flatnonzero(side), module.r_max, reach)
              for side in (upper, ~upper)]
    assert all(len(g["positions"]) > g["n_local"] for g in graphs)
    out = evaluate(module, atoms, graphs)
    assert_same_as_python(out, estimator.predict(atoms), atoms)


def test_no_slice_keeps_a_whole_dimension(pair):
    """`x[:, a:b]` compiles to a slice of all of dim 0, whose backward pass copies the whole
    tensor; the export drops them (the values stay those of Python, above)."""
    _, module = pair
    whole = []
    for submodule in module.modules():
        for name in submodule._c._method_names():
            for node in submodule._c._get_method(name).graph.findAllNodes("aten::slice"):
                source, *arguments = node.inputs()
                values = [a.toIValue() if a.node().kind() == "prim::Constant" else "?"
                          for a in arguments[1:]]
                if isinstance(source.type(), torch._C.TensorType) and values in (
                        [0, 2**63 - 1, 1], [None, None, 1], [0, None, 1], [None, 2**63 - 1, 1]):
                    whole.append(name)
    assert whole == []


def test_exported_module_describes_itself():
    committee, llpr = (torch.jit.load(str(exported(kind))) for kind in ("committee", "llpr"))
    assert (committee.estimator, committee.num_members) == ("committee", 4)
    assert (llpr.estimator, llpr.num_members) == ("llpr", 1)
    for module in (committee, llpr):
        assert list(module.elements) == ["Cu"]
        assert (module.r_max, module.num_interactions) == (4.0, 2)


def test_cli_writes_a_loadable_file(models, capsys):
    output = export_directory() / "cli-llpr.pt"
    assert main(["export-lammps", "--llpr", models["llpr"], "-o", str(output)]) == 0
    assert "pair_style mdmonitor" in capsys.readouterr().out
    assert torch.jit.load(str(output)).estimator == "llpr"


def test_cli_names_a_missing_model(capsys):
    assert main(["export-lammps", "--committee", "missing_0.model", "missing_1.model"]) == 1
    assert "missing_0.model" in capsys.readouterr().err
