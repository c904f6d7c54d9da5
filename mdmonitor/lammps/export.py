"""Export an uncertainty estimator as one TorchScript file for `pair_style mdmonitor` in LAMMPS.

The exported module takes the graph LAMMPS builds on one rank and returns what the pair style
needs (float64 throughout; eV, A):

    forward(positions (n_all, 3), edge_index (2, n_edges) [sender, receiver], unit_shifts
            (n_edges, 3), cell (3, 3) rows a, b, c, species (n_all,) index into `elements`,
            n_local, compute_virial) -> dict

Atoms 0..n_local-1 are the rank's own atoms, the rest ghost atoms. Edge e joins sender s to
receiver r with vector x_r - x_s + unit_shifts[e] @ cell; a graph is either

- periodic (one rank): only local atoms, periodic images through unit_shifts, or
- with ghost atoms (any number of ranks): the atoms within one edge of a local atom, with the
  edges into the local atoms only, each layer's features of the ghost atoms taken from their
  owners by `torch.ops.mdmonitor.exchange` (LAMMPS's communication; needs `exchange_width`
  values per atom), or every atom within num_interactions edges of a local atom with its edges,
  each layer evaluated only where it reaches them; ghost images of one atom possibly merged into
  one row with unit_shifts between them; only local atoms' energies count (`PrunedMACE`).

The dict holds "energy" (1,) of the local atoms, "atomic_energies" (n_local,), "forces"
(n_all, 3) = -d energy / d positions (ghost rows belong to the ghost atoms' owners: sum them
there), "graph_sizes" (2, num_interactions + 1): the atoms and the edges each layer
evaluated (column 0: the atoms embedded and the edges with vectors, then layer by layer; see
`PrunedMACE`), "virial" (6,) = -d energy / d strain in LAMMPS order xx yy zz xy xz yz (only with
compute_virial), and the per-atom uncertainty:

- "atomic_uncertainty" (n_local,) whenever it is complete: always for the energy LLPR, and for a
  committee or the force LLPR on a graph without ghost atoms;
- otherwise (with ghost atoms) the module's `num_force_rows` per-atom 3-vectors, "member_forces"
  (n_members, n_all, 3) of a committee or "force_rows" (R, n_all, 3) of the force LLPR: like a
  force, such a row on an atom is only known once its ghost rows are summed onto the owner, so
  the host sums them (LAMMPS reverse communication) and calls the exported `force_uncertainty`
  on the local rows.

Committee (Heid et al. 2024, Eqs. 4-8): mean energies, forces and virial over members; the
uncertainty is `mdmonitor.estimators.prediction.force_uncertainty`, the unbiased std over
members averaged over x, y, z (eV/A). A committee with a driver (`Committee(..., driver=...)`)
returns the driver's energies, forces and virial instead, with the same uncertainty, and exports
a second method `drive` (same arguments) that evaluates the driver alone and returns "energy",
"atomic_energies", "forces" and "virial": what the pair style calls on steps whose uncertainty
nobody reads. Its `driver` attribute says what drives ("mean" when the mean does).
LLPR: the single model's results and scale / sqrt(LPR_j) with
LPR_j = 1 / (f_j^T (H + zeta^2 I)^-1 f_j), f_j the last-layer features of `mdmonitor.llpr`; its
`drive` is the model alone (no last-layer features, no triangular solve). Force LLPR (target
"forces", `mdmonitor.estimators.force_posterior`): the rows are the derivatives of the local
atoms' summed features along stored directions, one backward pass each on the one forward pass;
exact, the identity (R = D, the Jacobian G), reduced to scale sqrt(g_jk^T (H + zeta^2 I)^-1 g_jk)
averaged over x, y, z; sampled, the K perturbations `posterior_perturbations` draws from the
file's seed (R = K, the force sets F - scale G^T delta_s), reduced to the committee's spread.

`uncertainty_on_request` (bool): True when `drive` gives the dynamics of every step and
`forward` only adds the uncertainty (a driven committee, the LLPR of either target), so the
pair style calls `forward` only on the steps whose uncertainty a fix reads.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from ase.data import chemical_symbols

from ..common.atomic_files import replaced_atomically
from ..common.mace_imports import compile_mode, jit
from ..estimators.committee import Committee
from ..estimators.llpr import (
    LastLayerLPR,
    energy_scale,
    final_linear,
    linear_feature_map,
)
from ..estimators.mace_model import MaceModel
from .pruned_mace import PrunedMACE

FORMAT_VERSION = 2  # 2: layers exchange the ghost atoms' features


@compile_mode("script")
class GraphModel(torch.nn.Module):
    """One MACE model (float64) on a LAMMPS graph: local atomic energies, forces on all atoms,
    virial, and the model's invariant node features of the local atoms."""

    def __init__(self, model: MaceModel):
        super().__init__()
        # a fresh copy from the file (the estimator's copy may carry unscriptable hooks), the
        # same bytes as the estimator's or refused before they are unpickled
        self.model = PrunedMACE(MaceModel(model.path, head=model.head,
                                          sha256=model.sha256()).module.double())
        self.register_buffer("head", torch.tensor([model.heads.index(model.head)]))
        self.num_elements = len(model.elements)

    def forward(self, positions: torch.Tensor, edge_index: torch.Tensor,
                unit_shifts: torch.Tensor, cell: torch.Tensor, species: torch.Tensor,
                n_local: int, compute_virial: bool
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        energies, node_feats, strain, graph_sizes = self.evaluate(
            positions, edge_index, unit_shifts, cell, species, n_local, compute_virial)
        forces, virial = self.forces_and_virial(energies, positions, strain, compute_virial)
        return energies.detach(), forces, virial, node_feats.detach(), graph_sizes

    def evaluate(self, positions: torch.Tensor, edge_index: torch.Tensor,
                 unit_shifts: torch.Tensor, cell: torch.Tensor, species: torch.Tensor,
                 n_local: int, compute_virial: bool
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The forward pass alone, its graph kept: local energies and node features (both
        differentiable in `positions`, which now requires grad), strain, graph sizes."""
        positions.requires_grad_(True)
        node_attrs = torch.nn.functional.one_hot(species, self.num_elements).double()
        energies, node_feats, strain, n_atoms, n_edges = self.model(
            positions, edge_index, unit_shifts, cell, node_attrs, self.head, n_local,
            compute_virial)
        return energies, node_feats, strain, torch.tensor([n_atoms, n_edges], dtype=torch.long)

    def forces_and_virial(self, energies: torch.Tensor, positions: torch.Tensor,
                          strain: torch.Tensor, compute_virial: bool
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
        """-d energy / d positions (n_all, 3) and the virial (6,) in LAMMPS order (zero without
        compute_virial), by the backward pass that frees the forward pass's graph."""
        inputs = [positions]
        if compute_virial:
            inputs.append(strain)
        grads = torch.autograd.grad([energies.sum()], inputs, allow_unused=True)
        forces = grads[0]
        forces = torch.zeros_like(positions) if forces is None else -forces
        virial = torch.zeros(6, dtype=positions.dtype, device=positions.device)
        if len(grads) == 2:
            strain_gradient = grads[1]
            if strain_gradient is not None:
                w = -strain_gradient
                virial = torch.stack([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])
        return forces, virial


@compile_mode("script")
class CommitteeModule(torch.nn.Module):
    """A committee of MACE models sharing one graph (see the module docstring)."""

    def __init__(self, committee: Committee):
        super().__init__()
        if committee.models is None:
            raise ValueError("only a committee of MACE model files can be exported "
                             "(Committee.from_mace), not one of ASE calculators")
        self.members = torch.nn.ModuleList([GraphModel(m) for m in committee.models])
        driver = committee.driver
        # the driver's index: a member's, len(members) for a separate model (in `separate`),
        # -1 for the mean
        separate = [driver] if isinstance(driver, MaceModel) else []
        self.separate = torch.nn.ModuleList([GraphModel(m) for m in separate])
        self.driver_index = (-1 if driver is None else len(self.members)
                             if isinstance(driver, MaceModel) else int(driver))
        set_metadata(self, [*committee.models, *separate], "committee", len(committee.models),
                     "eV/A")
        self.driver = "mean" if driver is None else committee.driven_by
        self.uncertainty_on_request = driver is not None
        self.num_force_rows = len(self.members)

    def forward(self, positions: torch.Tensor, edge_index: torch.Tensor,
                unit_shifts: torch.Tensor, cell: torch.Tensor, species: torch.Tensor,
                n_local: int, compute_virial: bool) -> Dict[str, torch.Tensor]:
        energies: List[torch.Tensor] = []
        forces: List[torch.Tensor] = []
        virials: List[torch.Tensor] = []
        graph_sizes = torch.zeros((2, 0), dtype=torch.long)
        for member in self.members:
            e, f, v, _, graph_sizes = member(positions, edge_index, unit_shifts, cell, species,
                                             n_local, compute_virial)
            energies.append(e)
            forces.append(f)
            virials.append(v)
        member_forces = torch.stack(forces)
        if self.driver_index < 0:
            result = driven(torch.stack(energies).mean(0), member_forces.mean(0),
                            torch.stack(virials).mean(0), compute_virial, graph_sizes)
        elif self.driver_index < len(energies):
            result = driven(energies[self.driver_index], forces[self.driver_index],
                            virials[self.driver_index], compute_virial, graph_sizes)
        else:
            result = self.drive(positions, edge_index, unit_shifts, cell, species, n_local,
                                compute_virial)
        if positions.shape[0] == n_local:
            result["atomic_uncertainty"] = self.force_uncertainty(member_forces)
        else:
            result["member_forces"] = member_forces
        return result

    @torch.jit.export
    def force_uncertainty(self, member_forces: torch.Tensor) -> torch.Tensor:
        """(M, N, 3) member forces summed over images -> (N,) their spread (`committee_spread`)."""
        return committee_spread(member_forces)

    @torch.jit.export
    def drive(self, positions: torch.Tensor, edge_index: torch.Tensor,
              unit_shifts: torch.Tensor, cell: torch.Tensor, species: torch.Tensor,
              n_local: int, compute_virial: bool) -> Dict[str, torch.Tensor]:
        """The driver alone: its energy, atomic energies, forces and virial (no uncertainty)."""
        for index, member in enumerate(self.members):
            if index == self.driver_index:
                e, f, v, _, sizes = member(positions, edge_index, unit_shifts, cell, species,
                                           n_local, compute_virial)
                return driven(e, f, v, compute_virial, sizes)
        for model in self.separate:
            e, f, v, _, sizes = model(positions, edge_index, unit_shifts, cell, species, n_local,
                                      compute_virial)
            return driven(e, f, v, compute_virial, sizes)
        raise RuntimeError("this committee is driven by its mean, which needs every member: "
                           "call forward")


def driven(atomic_energies: torch.Tensor, forces: torch.Tensor, virial: torch.Tensor,
           compute_virial: bool, graph_sizes: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The results that drive the dynamics, as the pair style reads them, with the atoms and
    edges of each layer's graph."""
    result = {"energy": atomic_energies.sum().view(1), "atomic_energies": atomic_energies,
              "forces": forces, "graph_sizes": graph_sizes}
    if compute_virial:
        result["virial"] = virial
    return result


@compile_mode("script")
class LLPRModule(torch.nn.Module):
    """One MACE model with its last-layer LPR uncertainty, or for target "forces" the posterior
    spread of its forces (see the module docstring)."""

    def __init__(self, estimator: LastLayerLPR):
        super().__init__()
        model = estimator.model
        self.member = GraphModel(model)
        readouts = model.module.readouts
        if any(getattr(r, "num_heads", 1) > 1 for r in readouts):
            raise NotImplementedError(f"model '{model.name}' has several heads in its "
                                      "non-linear readout; LLPR export supports one head")
        # readout i reads the node features of interaction i (the last one if it is alone);
        # its final linear map turns its input x into features x @ scale * G (mdmonitor.llpr)
        widths = [int(p.linear.irreps_out.dim) for p in model.module.products]
        ends = np.cumsum([0] + widths).tolist()
        head = model.heads.index(model.head)
        scale = energy_scale(model)
        maps, self.feature_bounds = [], []
        for index, readout in enumerate(readouts):
            layer = len(widths) - 1 if len(readouts) == 1 else index
            self.feature_bounds.append([ends[layer], ends[layer + 1]])
            maps.append(scale * linear_feature_map(final_linear(readout, model.name), head)[0])
        self.register_buffer("feature_map", torch.block_diag(*maps).double())
        self.register_buffer("cholesky", estimator.cholesky.clone().double())
        self.scale = estimator.scale
        # 1/sqrt(<1/LPR>_Z) per model species for an element-relative LLPR, else 1
        reference = estimator.element_reference or {}
        self.register_buffer("species_factor", torch.tensor(
            [reference.get(z, 1.0) ** -0.5 for z in model.elements], dtype=torch.float64))
        # target "forces": the summed features are differentiated along the estimator's rows
        self.forces_target = estimator.target == "forces"
        self.exact = estimator.samples == 0
        directions = (estimator.force_directions.clone() if self.forces_target
                      else torch.zeros(0, len(self.cholesky), dtype=torch.float64))
        self.register_buffer("directions", directions)
        self.num_force_rows = len(directions)
        set_metadata(self, [model], "llpr", 1, estimator.unit)
        self.uncertainty_on_request = True

    def forward(self, positions: torch.Tensor, edge_index: torch.Tensor,
                unit_shifts: torch.Tensor, cell: torch.Tensor, species: torch.Tensor,
                n_local: int, compute_virial: bool) -> Dict[str, torch.Tensor]:
        if self.forces_target:
            return self.with_force_rows(positions, edge_index, unit_shifts, cell, species,
                                        n_local, compute_virial)
        energies, forces, virial, node_feats, graph_sizes = self.member(
            positions, edge_index, unit_shifts, cell, species, n_local, compute_virial)
        result = driven(energies, forces, virial, compute_virial, graph_sizes)
        result["atomic_uncertainty"] = self.uncertainty(node_feats, species)
        return result

    @torch.jit.export
    def drive(self, positions: torch.Tensor, edge_index: torch.Tensor,
              unit_shifts: torch.Tensor, cell: torch.Tensor, species: torch.Tensor,
              n_local: int, compute_virial: bool) -> Dict[str, torch.Tensor]:
        """The model alone: its energy, atomic energies, forces and virial (no uncertainty)."""
        energies, forces, virial, _, graph_sizes = self.member(
            positions, edge_index, unit_shifts, cell, species, n_local, compute_virial)
        return driven(energies, forces, virial, compute_virial, graph_sizes)

    def with_force_rows(self, positions: torch.Tensor, edge_index: torch.Tensor,
                        unit_shifts: torch.Tensor, cell: torch.Tensor, species: torch.Tensor,
                        n_local: int, compute_virial: bool) -> Dict[str, torch.Tensor]:
        """The model's results and the force target's rows (R, n_all, 3), R = D exact (the
        Jacobian G of the local atoms' summed features) or K sampled (the force sets
        F - scale G^T delta_s): one backward pass per row on the one forward pass, whose graph
        the forces' backward pass frees last."""
        energies, node_feats, strain, graph_sizes = self.member.evaluate(
            positions, edge_index, unit_shifts, cell, species, n_local, compute_virial)
        summed = self.features(node_feats).sum(0)
        rows: List[torch.Tensor] = []
        for row in range(self.directions.shape[0]):
            direction: List[Optional[torch.Tensor]] = [self.directions[row]]
            grad = torch.autograd.grad([summed], [positions], direction, retain_graph=True,
                                       allow_unused=True)[0]
            rows.append(torch.zeros_like(positions) if grad is None else grad)
        forces, virial = self.member.forces_and_virial(energies, positions, strain,
                                                       compute_virial)
        result = driven(energies.detach(), forces, virial, compute_virial, graph_sizes)
        derivatives = torch.stack(rows)
        force_rows = derivatives if self.exact else forces - self.scale * derivatives
        if positions.shape[0] == n_local:
            result["atomic_uncertainty"] = self.force_uncertainty(force_rows)
        else:
            result["force_rows"] = force_rows
        return result

    @torch.jit.export
    def force_uncertainty(self, force_rows: torch.Tensor) -> torch.Tensor:
        """(R, N, 3) rows summed over images -> (N,) eV/A, as `LastLayerLPR`'s force target:
        exact, scale sqrt(g_jk^T (H + zeta^2 I)^-1 g_jk) averaged over x, y, z; sampled, the
        committee's spread of the K force sets."""
        if not self.exact:
            return committee_spread(force_rows)
        whitened = torch.linalg.solve_triangular(
            self.cholesky, force_rows.reshape(force_rows.shape[0], -1), upper=False)
        std = self.scale * torch.sqrt((whitened * whitened).sum(0))
        return std.reshape(force_rows.shape[1], 3).mean(1)

    def features(self, node_feats: torch.Tensor) -> torch.Tensor:
        """Last-layer features (n_local, D) of the local atoms from their node features."""
        inputs: List[torch.Tensor] = []
        for index, readout in enumerate(self.member.model.readouts):
            bounds = self.feature_bounds[index]
            x = node_feats[:, bounds[0]:bounds[1]]
            if hasattr(readout, "linear_2"):  # non-linear readout: the input of linear_2
                x = readout.non_linearity(readout.linear_1(x))
            inputs.append(x)
        return torch.cat(inputs, dim=1) @ self.feature_map

    def uncertainty(self, node_feats: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """scale / sqrt(LPR_j) of the local atoms from their node features (n_local, width)."""
        solved = torch.linalg.solve_triangular(self.cholesky, self.features(node_feats).T,
                                               upper=False)
        return (self.scale * torch.sqrt((solved * solved).sum(0))
                * self.species_factor[species[:solved.shape[1]]])


def committee_spread(member_forces: torch.Tensor) -> torch.Tensor:
    """(M, N, 3) member forces -> (N,) unbiased std over members, averaged over x, y, z (eV/A),
    as mdmonitor.estimators.prediction.force_uncertainty."""
    return torch.std(member_forces, dim=[0], unbiased=True).mean(1)


def set_metadata(module: torch.nn.Module, models: List[MaceModel], estimator: str,
                 members: int, unit: str) -> None:
    """Attributes the LAMMPS pair style reads: element symbols in species order, cutoff (A),
    message-passing layers (of the first of `models`), estimator kind, number of members,
    uncertainty unit, and the widest node features a layer of any of `models` hands to the next
    (the values per atom of `exchange`)."""
    model = models[0]
    module.elements = [chemical_symbols[z] for z in model.elements]
    module.r_max = float(model.r_max)
    module.num_interactions = int(model.module.num_interactions)
    module.exchange_width = max([int(p.linear.irreps_out.dim) for m in models
                                 for p in m.module.products[:-1]], default=0)
    module.estimator = estimator
    module.num_members = members
    module.uncertainty_unit = unit
    module.format_version = FORMAT_VERSION


WHOLE_END = (None, 2**63 - 1)  # an `end` of aten::slice that means "to the end"


def drop_whole_slices(compiled: torch.jit.ScriptModule) -> None:
    """Remove the slices that keep a whole dimension (`x[:, a:b]` compiles to a slice of dim 0
    from 0 to the end, then one of dim 1) from every method of `compiled` and its submodules.

    They are views equal to their input, but each costs its backward pass a zero-filled copy
    of the whole tensor: in e3nn's tensor products, of the (n_edges, weights) tensor, once per
    weighted path (3456 atoms: 7 of 55 296 x 112 per force call, about 12 % of it), which
    eager PyTorch does not pay."""
    for module in compiled.modules():
        for name in module._c._method_names():
            graph = module._c._get_method(name).graph
            for node in graph.findAllNodes("aten::slice"):
                source, *arguments = node.inputs()
                if not isinstance(source.type(), torch._C.TensorType) or any(
                        a.node().kind() != "prim::Constant" for a in arguments[1:]):
                    continue
                start, end, step = (a.toIValue() for a in arguments[1:])
                if start in (None, 0) and end in WHOLE_END and step == 1:
                    node.output().replaceAllUsesWith(source)
                    node.destroy()


def export(estimator, path: str | Path) -> Path:
    """Compile a `Committee` (of MACE files) or `LastLayerLPR` to TorchScript and write it to
    `path` (atomically), with the model files and their SHA-256 recorded in the file."""
    path = Path(path)
    if isinstance(estimator, Committee):
        module, models = CommitteeModule(estimator), estimator.models
    elif isinstance(estimator, LastLayerLPR):
        if estimator.component is not None:
            raise ValueError("the LAMMPS export computes the LPR; a readout's CPR (component "
                             f"{estimator.component}) is monitored in ASE only")
        module, models = LLPRModule(estimator), [estimator.model]
    else:
        raise ValueError(f"cannot export {type(estimator).__name__} to LAMMPS: the export takes "
                         "a committee of MACE models or an LLPR (LTAU and GMM run in ASE only)")
    provenance = {"format_version": FORMAT_VERSION, "estimator": module.estimator,
                  "models": [{"file": str(m.path), "sha256": m.sha256(),
                              "head": m.head} for m in models]}
    if getattr(estimator, "driver", None) is not None:  # (no "file" key: those are the members)
        provenance["driver"] = estimator.driven_by
        if isinstance(estimator.driver, MaceModel):
            provenance["driver_sha256"] = estimator.driver.sha256()
    with warnings.catch_warnings():  # raised by TorchScript on annotations inside mace/e3nn
        warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support")
        compiled = jit.compile(module)
    drop_whole_slices(compiled)
    with replaced_atomically(path) as temporary:
        torch.jit.save(compiled, str(temporary),
                       _extra_files={"mdmonitor.json": json.dumps(provenance)})
    return path
