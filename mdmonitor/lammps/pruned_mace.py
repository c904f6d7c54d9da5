"""A MACE model evaluated only where its message passing reaches a local atom's energy.

Only the energies of the local atoms 0..n_local-1 count. With L interaction layers, layer l
(1..L) needs its node update only on the atoms within L - l edges of a local atom: the last
layer and the readouts on the local atoms, the first one on every atom within L - 1 edges.
`PrunedMACE` runs MACE's forward pass (node embedding, spherical harmonics and radial basis,
then per layer interaction -> product, and the readouts) with each layer restricted to those
receivers that are local or have edges into them, its edges to the edges into them, and its rows
to the atoms it reads. The local atoms' energies, and so forces and virial, are those of the
full model: an atom more than L - l edges from every local atom cannot change a local energy
through layer l.

Two kinds of graph with atoms beyond the local ones:
- a halo (a chunk of LAMMPS's atoms, or a graph with every edge among ghost atoms): the atoms
  within L - 1 edges have their edges, and layer l recomputes them, pruned as above;
- one edge of ghost atoms without edges into them (LAMMPS on several ranks): every layer updates
  the local atoms only, and before layer l + 1 reads them the ghost atoms' features come from
  the ranks that own them, `torch.ops.mdmonitor.exchange` (below), whose backward pass sends the
  gradients of those features back to the owners.
On a graph of local atoms only (one rank, periodic edges) nothing is pruned or exchanged.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ..common.mace_imports import compile_mode

# torch.ops.mdmonitor.exchange(features (n_atoms, width)) -> (n_atoms, width): the rows of the
# graph's ghost atoms replaced by the features their owners computed; backward, the gradients
# of those rows added to the owners' rows. LAMMPS's pair style registers it with its forward and
# reverse communication (lammps_plugin/pair_mdmonitor.cpp); here, where no atom is a ghost, it
# is a copy, so that the model compiles and runs in Python.
if not hasattr(torch.ops.mdmonitor, "exchange"):  # (the plugin's, when it was loaded first)
    _LIBRARY = torch.library.Library("mdmonitor", "FRAGMENT")
    _LIBRARY.define("exchange(Tensor features) -> Tensor")
    _LIBRARY.impl("exchange", lambda features: features.clone(), "CompositeImplicitAutograd")


def needed_atoms(edge_index: torch.Tensor, n_atoms: int, n_local: int,
                 num_layers: int) -> List[torch.Tensor]:
    """Masks (n_atoms,) of the atoms whose node features after layer l = 0..num_layers reach a
    local atom's energy: [within L edges, ..., within 1 edge, the local atoms]; edge_index
    (2, n_edges) [sender, receiver]."""
    needed = torch.zeros(n_atoms, dtype=torch.bool, device=edge_index.device)
    needed[:n_local] = True
    masks = [needed]
    for _ in range(num_layers):
        senders = edge_index[0][needed[edge_index[1]]]
        needed = needed.index_fill(0, senders, True)
        masks.append(needed)
    masks.reverse()
    return masks


@compile_mode("script")
class PrunedMACE(torch.nn.Module):
    """A MACE or ScaleShiftMACE model (its submodules, shared) run on the atoms that reach the
    local atoms' energies (see the module docstring)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        kind = type(model).__name__
        if kind not in ("MACE", "ScaleShiftMACE"):
            raise NotImplementedError(f"the LAMMPS export runs MACE and ScaleShiftMACE models, "
                                      f"not {kind}")
        if hasattr(model, "joint_embedding"):
            raise NotImplementedError("the LAMMPS export does not pass the extra per-system "
                                      "inputs of a MACE model with embedding_specs")
        self.node_embedding = model.node_embedding
        self.spherical_harmonics = model.spherical_harmonics
        self.radial_embedding = model.radial_embedding
        self.atomic_energies_fn = model.atomic_energies_fn
        self.interactions = model.interactions
        self.products = model.products
        self.readouts = model.readouts
        self.register_buffer("atomic_numbers", model.atomic_numbers)
        self.num_interactions = len(model.interactions)
        self.has_pair_repulsion = hasattr(model, "pair_repulsion")
        self.pair_repulsion_fn = model.pair_repulsion_fn if self.has_pair_repulsion else None
        self.has_scale_shift = kind == "ScaleShiftMACE"
        self.scale_shift = model.scale_shift if self.has_scale_shift else None

    def forward(self, positions: torch.Tensor, edge_index: torch.Tensor,
                unit_shifts: torch.Tensor, cell: torch.Tensor, node_attrs: torch.Tensor,
                head: torch.Tensor, n_local: int, compute_virial: bool
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[int], List[int]]:
        """Energies (n_local,) of the local atoms (eV), their node features (n_local, sum of
        the layers' widths), the strain the energies were evaluated at (3, 3; zero, with
        gradient when compute_virial), and the atoms and edges evaluated per layer.

        positions (n_atoms, 3) A; edge_index (2, n_edges) [sender, receiver], edge vector
        x_receiver - x_sender + unit_shifts @ cell; node_attrs (n_atoms, n_elements) one-hot;
        head (1,) the model head's index."""
        masks = needed_atoms(edge_index, positions.shape[0], n_local, self.num_interactions)
        # edges into an atom some layer updates, with their vectors under a symmetric strain
        kept = masks[1][edge_index[1]]
        edge_index = edge_index[:, kept]
        unit_shifts = unit_shifts[kept]
        strain = torch.zeros((3, 3), dtype=positions.dtype, device=positions.device)
        if compute_virial:
            strain.requires_grad_(True)
        symmetric = 0.5 * (strain + strain.transpose(0, 1))
        strained = positions + positions @ symmetric
        shifts = unit_shifts @ (cell + cell @ symmetric)
        vectors = strained[edge_index[1]] - strained[edge_index[0]] + shifts
        lengths = torch.linalg.vector_norm(vectors, dim=1, keepdim=True)

        node_feats = self.node_embedding(node_attrs)
        edge_attrs = self.spherical_harmonics(vectors)
        edge_feats, cutoff = self.radial_embedding(lengths, node_attrs, edge_index,
                                                   self.atomic_numbers)
        local_heads = head.expand(n_local)
        arange = torch.arange(n_local, device=positions.device)
        node_energy = torch.zeros(n_local, dtype=positions.dtype, device=positions.device)
        local_edges = edge_index[1] < n_local
        if self.pair_repulsion_fn is not None:
            repulsion = self.pair_repulsion_fn(lengths[local_edges], node_attrs,
                                               edge_index[:, local_edges], self.atomic_numbers)
            node_energy = node_energy + repulsion[:n_local]

        # layer l updates the atoms of masks[l] that are local or have edges into them; the
        # others (ghost atoms of a graph that ends one edge beyond the local atoms) take the
        # features their owners computed (`exchange`) before layer l + 1 reads them
        updated = torch.zeros_like(masks[0])
        updated[:n_local] = True
        updated = updated.index_fill(0, edge_index[1], True)
        # rows: the atoms layer l reads (masks[l - 1]), in atom order; rows_of maps an atom to
        # its row, so that receivers (a subset) are picked out of the layer's output
        rows = masks[0].nonzero().squeeze(1)
        node_feats = node_feats[rows]
        n_atoms, n_edges = [int(rows.shape[0])], [int(edge_index.shape[1])]
        layer_feats: List[torch.Tensor] = []
        for i, (interaction, product) in enumerate(zip(self.interactions, self.products)):
            receivers = (masks[i + 1] & updated).nonzero().squeeze(1)
            rows_of = torch.full_like(masks[i], -1, dtype=torch.long)
            rows_of[rows] = torch.arange(rows.shape[0], device=rows.device)
            into = masks[i + 1][edge_index[1]]
            layer_cutoff: Optional[torch.Tensor] = None
            if cutoff is not None:
                layer_cutoff = cutoff[into]
            node_feats, sc = interaction(
                node_attrs=node_attrs[rows], node_feats=node_feats,
                edge_attrs=edge_attrs[into], edge_feats=edge_feats[into],
                edge_index=rows_of[edge_index[:, into]], cutoff=layer_cutoff,
                first_layer=(i == 0))
            picked = rows_of[receivers]
            node_feats = node_feats[picked]
            if sc is not None:
                sc = sc[picked]
            node_feats = product(node_feats=node_feats, sc=sc, node_attrs=node_attrs[receivers])
            layer_feats.append(node_feats[:n_local])
            n_atoms.append(int(receivers.shape[0]))
            n_edges.append(int(into.sum()))
            if i + 1 < self.num_interactions:
                rows = masks[i + 1].nonzero().squeeze(1)
                every = node_feats.new_zeros((positions.shape[0], node_feats.shape[1]))
                every = every.index_copy(0, receivers, node_feats)
                node_feats = torch.ops.mdmonitor.exchange(every)[rows]

        interaction_energy = torch.zeros_like(node_energy)
        for i, readout in enumerate(self.readouts):
            feats = layer_feats[-1] if len(self.readouts) == 1 else layer_feats[i]
            interaction_energy = interaction_energy + readout(feats, local_heads)[arange,
                                                                                  local_heads]
        node_energy = node_energy + interaction_energy
        if self.scale_shift is not None:
            node_energy = self.scale_shift(node_energy, local_heads)
        e0 = self.atomic_energies_fn(node_attrs[:n_local])[arange, local_heads]
        return e0 + node_energy, torch.cat(layer_feats, dim=1), strain, n_atoms, n_edges
