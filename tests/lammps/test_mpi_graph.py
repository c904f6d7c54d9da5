"""The graph with ghost atoms that pair_style mdmonitor evaluates on several ranks: the atoms one
edge from the rank's atoms, images of one atom merged into one node, every layer updating the
local atoms and taking the ghost atoms' features from their owners. Its atoms and edges per layer
equal a brute-force count of hops from the rank's atoms, and the numbers equal those of one
rank. PrunedMACE, which chunks still use (a chunk's halo recomputed), equals the unpruned MACE
model."""

import re

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from mdmonitor.estimators.mace_model import MaceModel
from mdmonitor.lammps.plugin import build
from mdmonitor.lammps.pruned_mace import PrunedMACE
from tests.lammps_support import (
    exported,
    ghost_graph,
    read_dump,
    read_thermo,
    relative_error,
    run_lammps,
    write_data,
)

RTOL = 1e-8
LAYERS, R_MAX = 2, 4.0


def hops_from(atoms, local, r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Hop distance of every atom from the atoms `local` over every pair of images closer than
    r_max, and the receiver of every such pair."""
    receiver, sender = neighbor_list("ij", atoms, r_max)
    adjacency = coo_matrix((np.ones(len(sender)), (sender, receiver)), shape=(len(atoms),) * 2)
    return shortest_path(adjacency, unweighted=True, indices=local).min(axis=0), receiver


def hop_counts(atoms, local, r_max: float, layers: int) -> tuple[list[int], list[int]]:
    """Brute force: atoms and edges per layer [embedded, layer 1..layers] that PrunedMACE
    evaluates for a rank owning atoms `local`: layer l updates the atoms within layers - l hops,
    through every edge into them; the atoms embedded are those within `layers` hops, the edges
    with vectors those of layer 1."""
    hops, receiver = hops_from(atoms, local, r_max)
    within = [layers] + [layers - layer for layer in range(1, layers + 1)]
    counts = [int(np.count_nonzero(hops <= h)) for h in within]
    edges = [int(np.count_nonzero(hops[receiver] <= h)) for h in within]
    edges[0] = edges[1]
    return counts, edges


def cu_bulk_10x3x3():
    """360 atoms, rattled: 36.1 x 10.8 x 10.8 A, so that two or three ranks split along x see
    the atoms of the others (through two images each with two ranks) and images of their own
    atoms along y and z."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((10, 3, 3))
    atoms.rattle(0.05, seed=7)
    atoms.wrap()
    return atoms


@pytest.fixture(scope="module")
def plugin():
    return build()


@pytest.mark.parametrize("kind, ranks", [("llpr", 2), ("committee", 2), ("llpr", 3),
                                         ("committee", 3)])
def test_ranks_exchanging_features_equal_one_and_update_only_their_atoms(tmp_path, plugin, kind,
                                                                         ranks):
    atoms = cu_bulk_10x3x3()
    write_data(atoms, tmp_path / "cell.data")
    # atom types 1 and 2 alternate (both Cu): the species map holds on every rank
    script = f"""units metal
atom_style atomic
processors * 1 1
read_data cell.data extra/atom/types 1
mass 2 63.546
group even id 2:{len(atoms)}:2
set group even type 2
pair_style mdmonitor {exported(kind)}
pair_coeff * * Cu Cu
compute pe all pe/atom
fix mon all mdmonitor 1 cutoff 4.0 threshold 0.1
dump d all custom 1 atoms.dump id type fx fy fz c_pe f_mon[1]
dump_modify d sort id format float %.17g
thermo_style custom step pe pxx pyy pzz pxy pxz pyz
thermo_modify format float %.17g
run 0
"""
    results = {}
    for n in (1, ranks):
        done = run_lammps(script, tmp_path, n)
        results[n] = (read_dump(tmp_path / "atoms.dump")[0], read_thermo(tmp_path)[0],
                      (tmp_path / "log.lammps").read_text())
    (one, thermo_one, _), (several, thermo_several, log) = results[1], results[ranks]
    assert set(one["type"]) == {1, 2}
    for column in ("fx", "fy", "fz", "c_pe", "f_mon[1]"):
        assert relative_error(several[column], one[column]) < RTOL, column
    for key, value in thermo_one.items():
        assert thermo_several[key] == pytest.approx(value, rel=RTOL, abs=1e-6), key

    # rank r owns the atoms in x/Lx in [r/ranks, (r+1)/ranks)
    fractional_x = atoms.get_scaled_positions()[:, 0]
    rows = re.findall(r"rank (\d): (\d+) local, (\d+) ghost, (\d+) in graph; embedded (\d+) / "
                      r"(\d+); layer 1 (\d+) / (\d+); layer 2 (\d+) / (\d+)", log)
    assert len(rows) == ranks, done.stdout[-2000:]
    for rank, n_local, n_ghost, n_graph, *sizes in (list(map(int, row)) for row in rows):
        local = np.flatnonzero((fractional_x >= rank / ranks)
                               & (fractional_x < (rank + 1) / ranks))
        hops, receiver = hops_from(atoms, local, R_MAX)
        assert n_local == len(local)
        # the atoms within one edge embedded, each image once; both layers on the local atoms,
        # through the edges into them
        assert n_graph == sizes[0] == np.count_nonzero(hops <= 1) < n_local + n_ghost
        assert sizes[2] == sizes[4] == n_local
        assert sizes[1] == sizes[3] == sizes[5] == np.count_nonzero(hops[receiver] == 0)


def test_pruned_mace_equals_the_full_model_on_a_ghost_graph(models, cu_slab):
    """On one rank's graph with ghost atoms out to 2 x r_max (no merged images, rows in no
    particular order), the pruned evaluation gives the full MACE model's local energies, the
    forces of their sum and its node features, and updates the brute-force counts of atoms."""
    model = MaceModel(models["committee"][0]).module.double()
    pruned = PrunedMACE(model)
    atoms = cu_slab
    upper = np.flatnonzero(atoms.positions[:, 2] > np.median(atoms.positions[:, 2]))
    graph = ghost_graph(atoms, upper, R_MAX, LAYERS * R_MAX)
    n, n_local = len(graph["positions"]), graph["n_local"]
    node_attrs = torch.ones((n, 1), dtype=torch.float64)
    edge_index = torch.tensor(graph["edge_index"])

    def inputs():
        return torch.tensor(graph["positions"]).requires_grad_(True)

    positions = inputs()
    full = model({"positions": positions, "edge_index": edge_index,
                  "shifts": torch.zeros((edge_index.shape[1], 3), dtype=torch.float64),
                  "unit_shifts": torch.zeros((edge_index.shape[1], 3), dtype=torch.float64),
                  "cell": torch.zeros((1, 3, 3), dtype=torch.float64), "node_attrs": node_attrs,
                  "batch": torch.zeros(n, dtype=torch.long), "ptr": torch.tensor([0, n]),
                  "head": torch.tensor([0])}, compute_force=False)
    full_forces, = torch.autograd.grad(full["node_energy"][:n_local].sum(), positions)
    positions = inputs()
    energies, feats, _, n_atoms, n_edges = pruned(
        positions, edge_index, torch.zeros((edge_index.shape[1], 3), dtype=torch.float64),
        torch.zeros((3, 3), dtype=torch.float64), node_attrs, torch.tensor([0]), n_local, False)
    forces, = torch.autograd.grad(energies.sum(), positions)
    for actual, expected in ((energies, full["node_energy"][:n_local]), (forces, full_forces),
                             (feats, full["node_feats"][:n_local])):
        assert relative_error(actual.detach().numpy(), expected.detach().numpy()) < 1e-12

    ghost_atoms = Atoms(atoms.numbers[graph["owner"]], graph["positions"])
    counts, _ = hop_counts(ghost_atoms, np.arange(n_local), R_MAX, LAYERS)
    assert n_atoms == counts
    assert n_atoms[-1] == n_local < n_atoms[1] < n_atoms[0] <= n
    assert n_edges[0] == n_edges[1] < edge_index.shape[1]
