"""Per-atom latent descriptors of a MACE model, for the latent-space estimators (LTAU, GMM).

The descriptor of an atom is the invariant (0e) part of the node features of every interaction
layer, concatenated: what MACE's readouts read, and what mace's own
`MACECalculator.get_descriptors(invariants_only=True)` returns. It comes out of the same forward
pass as the forces, so a latent-space estimator adds no model evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..common.mace_imports import o3
from .mace_model import MaceModel
from .prediction import MaceOutput


def invariant_columns(model: MaceModel) -> np.ndarray:
    """Columns of MACE's `node_feats` output that hold 0e (scalar) features, layer by layer."""
    columns, start = [], 0
    for product in model.module.products:
        irreps = o3.Irreps(str(product.linear.irreps_out))
        for (_, irrep), part in zip(irreps, irreps.slices()):
            if irrep == o3.Irrep("0e"):
                columns.extend(range(start + part.start, start + part.stop))
        start += irreps.dim
    return np.array(columns, dtype=np.int64)


class LatentModel:
    """A MACE model evaluated together with the latent descriptors (N, D) of its atoms."""

    def __init__(self, model: MaceModel):
        self.model = model
        self.columns = torch.as_tensor(invariant_columns(model))
        self.width = len(self.columns)

    def predict(self, atoms) -> tuple[MaceOutput, np.ndarray]:
        """Energy, forces, stress of `atoms` and its atoms' descriptors (N, D), checked finite."""
        raw, output = self.model.run(atoms)
        return output, self.descriptors(raw)

    def descriptors(self, raw: dict) -> np.ndarray:
        """The descriptors (N, D) in MACE's raw output of a forward pass."""
        return self.descriptor_tensor(raw).detach().cpu().numpy().astype(float)

    def descriptor_tensor(self, raw: dict) -> torch.Tensor:
        """The same as a tensor that keeps the autograd graph of the forward pass."""
        return raw["node_feats"][:, self.columns]

    def training_descriptors(self, structures, batch_size: int = 16,
                             progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Descriptors (N_atoms, D) and atomic numbers (N_atoms,) of all atoms of `structures`,
        frame after frame in order."""
        descriptors = []
        with torch.no_grad(), tqdm(total=len(structures), desc="latent descriptors",
                                   unit="structure", disable=not progress) as bar:
            for start in range(0, len(structures), batch_size):
                chunk = structures[start:start + batch_size]
                raw = self.model.module(self.model.graph(chunk), compute_force=False)
                descriptors.append(self.descriptors(raw))
                bar.update(len(chunk))
        numbers = np.concatenate([atoms.numbers for atoms in structures])
        return np.concatenate(descriptors), numbers

