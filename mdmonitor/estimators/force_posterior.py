"""The last-layer posterior of a MACE model carried to its forces (Bigi et al. 2024).

The energy is linear in the readout weights w, E = const + sum_j f_j . w, so under the
last-layer posterior w ~ N(w*, Sigma), Sigma = alpha^2 (H + zeta^2 I)^-1 (alpha in eV, H the
Gauss-Newton matrix of `llpr.LastLayerLPR`), the force on atom j along k is Gaussian with

    mean F_jk,    variance  g_jk^T Sigma g_jk,    g_jk = d(sum_i f_i) / d r_jk

(g_jk: D features per A). Exact: the D-column Jacobian G = d(sum_i f_i)/dr from D
vector-Jacobian products, the variances its whitened columns' squared norms. Sampled: K weight
perturbations delta_s ~ N(0, Sigma), drawn once, give K force sets F - G delta_s from K
vector-Jacobian products on the one forward pass; their spread is the committee's.
"""

from __future__ import annotations

import numpy as np
import torch

from ..common.mace_imports import compute_forces_virials
from .mace_model import MaceModel, to_output
from .prediction import MaceOutput, check_output


def posterior_perturbations(cholesky: torch.Tensor, samples: int, seed: int) -> torch.Tensor:
    """(K, D) weight perturbations delta_s = L^-T z_s, z_s ~ N(0, I) (seeded), with
    L L^T = H + zeta^2 I: samples of N(0, (H + zeta^2 I)^-1), to be scaled by alpha. The first
    K of a seed are the same for any larger K."""
    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(samples, cholesky.shape[0], generator=generator, dtype=cholesky.dtype)
    return torch.linalg.solve_triangular(cholesky.T, normal.T, upper=True).T


def forces_with_feature_derivatives(model: MaceModel, features, atoms,
                                    directions: torch.Tensor) -> tuple[MaceOutput, np.ndarray]:
    """The model's prediction of `atoms` and, for each row d of `directions` (K, D), the
    derivative d(sum_i f_i . d)/dr (N, 3) (eV/A per unit weight): shape (K, N, 3).

    One forward pass; its graph is kept through the K vector-Jacobian products and freed by the
    last backward pass, that of the model's forces (and stress, for periodic cells). With the
    identity as `directions` the derivatives are the Jacobian G, row by row. The products are
    taken one by one: on CPU that measured 15-25 % faster than torch's batched (vmap) backward.
    """
    graph = model.graph(atoms)
    periodic = bool(atoms.pbc.all())
    positions = graph["positions"].requires_grad_(True)
    with torch.enable_grad():
        raw = model.module(graph, compute_force=False, compute_displacement=periodic)
        summed = features.features().sum(dim=0)
        derivatives = torch.stack([
            torch.autograd.grad(summed, positions, grad_outputs=d, retain_graph=True)[0]
            for d in directions.to(summed.dtype)])
        if periodic:
            forces, _, stress = compute_forces_virials(
                raw["interaction_energy"], positions, raw["displacement"], graph["cell"],
                training=False, compute_stress=True)
        else:
            forces = -torch.autograd.grad(raw["interaction_energy"].sum(), positions)[0]
            stress = None
    output = to_output({**raw, "forces": forces, "stress": stress})
    check_output(f"model '{model.name}'", output)
    return output, derivatives.detach().to(torch.float64).cpu().numpy()


def force_covariance(jacobian: np.ndarray, cholesky: torch.Tensor, alpha: float) -> np.ndarray:
    """(N, 3, 3) covariance alpha^2 g_jk^T (H + zeta^2 I)^-1 g_jl of atom j's force components
    ((eV/A)^2), from the Jacobian G (D, N, 3) of the summed features."""
    dim, n_atoms, _ = jacobian.shape
    whitened = torch.linalg.solve_triangular(
        cholesky, torch.as_tensor(jacobian.reshape(dim, -1), dtype=cholesky.dtype),
        upper=False).cpu().numpy().reshape(dim, n_atoms, 3)
    return alpha**2 * np.einsum("dik,dil->ikl", whitened, whitened)
