"""Gaussian-mixture density of a model's latent descriptors (Tan et al., seed 004, Eq. 11).

A mixture of K full-covariance Gaussians, initialised by k-means and fitted by EM on the training
atoms' latent descriptors (one mixture per element), with K chosen by the Bayesian information
criterion unless given. An atom's uncertainty is its negative log-likelihood under the mixture,

    NLL(xi) = -log sum_k pi_k N(xi | mu_k, Sigma_k)       (nats)

reported relative to the lowest NLL of any training atom of its element, so that the most typical
training environment sits at 0 and the aggregated, calibrated values stay positive. The ranking
of atoms of one element is that of the NLL itself.

The mixture is fitted with scikit-learn; at run time it is evaluated with torch, so that no
second BLAS thread pool competes with the model's.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols

from ..common.structures import load_structures
from .files import load_estimator, save_estimator
from .latent import LatentModel
from .mace_model import MaceModel, as_model
from .prediction import Prediction, model_alone

FORMAT_VERSION = 1
MIXTURE_ARRAYS = ("weights", "means", "precisions_cholesky")


def fit_mixture(descriptors: np.ndarray, n_components: int | None, max_components: int,
                seed: int) -> dict:
    """Weights (K,), means (K, D) and Cholesky factors of the precisions (K, D, D) of the
    mixture with `n_components`, or with the K <= `max_components` of lowest BIC."""
    from sklearn.mixture import GaussianMixture

    candidates = [n_components] if n_components else range(1, max_components + 1)
    best, best_bic = None, np.inf
    for k in candidates:
        if k > len(descriptors):
            break
        mixture = GaussianMixture(k, covariance_type="full", init_params="kmeans",
                                  reg_covar=1e-6, n_init=1, random_state=seed)
        mixture.fit(descriptors)
        bic = mixture.bic(descriptors)
        if bic < best_bic:
            best, best_bic = mixture, bic
    if best is None:
        raise ValueError(f"{len(descriptors)} training atoms are too few for {n_components} "
                         "Gaussians")
    return {"weights": best.weights_, "means": best.means_,
            "precisions_cholesky": best.precisions_cholesky_}


def negative_log_likelihood(mixture: dict, descriptors: np.ndarray) -> np.ndarray:
    """-log p(xi) (nats) of each row of `descriptors` (n, D) under `mixture` (Eq. 11)."""
    return mixture_nll(mixture, torch.as_tensor(descriptors, dtype=torch.float64)).numpy()


def mixture_nll(mixture: dict, x: torch.Tensor) -> torch.Tensor:
    """`negative_log_likelihood` of the rows of tensor `x` (n, D), differentiable in `x`."""
    x = x.to(torch.float64)
    means = torch.as_tensor(mixture["means"], dtype=torch.float64)
    factors = torch.as_tensor(mixture["precisions_cholesky"], dtype=torch.float64)
    weights = torch.as_tensor(mixture["weights"], dtype=torch.float64)
    # whitened offsets (x - mu_k) L_k with L_k L_k^T = Sigma_k^-1: (K, n, D)
    whitened = torch.einsum("nd,kde->kne", x, factors) - torch.einsum(
        "kd,kde->ke", means, factors)[:, None, :]
    log_det = torch.log(torch.diagonal(factors, dim1=1, dim2=2)).sum(dim=1)  # log |L_k|
    log_gauss = (-0.5 * (whitened**2).sum(dim=2) + log_det[:, None]
                 - 0.5 * x.shape[1] * math.log(2 * math.pi))
    return -torch.logsumexp(torch.log(weights)[:, None] + log_gauss, dim=0)


class LatentGMM:
    """Single-model uncertainty from a Gaussian mixture on the model's latent descriptors.

    Build with `LatentGMM.fit(model, structures)` or `LatentGMM.load("gmm.npz")`.
    `predict(atoms)` gives the model's energy, forces and stress with atomic_uncertainty =
    NLL - (lowest training NLL of the element), in nats, and the NLL itself in
    `extra["latent_nll"]`.
    """

    kind = "gmm"
    unit = "nats"

    def __init__(self, model: MaceModel | str | Path, mixtures: dict, floors: dict):
        self.model = as_model(model)
        self.latent = LatentModel(self.model)
        for element, mixture in mixtures.items():
            if mixture["means"].shape[1] != self.latent.width:
                raise ValueError(f"the {chemical_symbols[element]} mixture was fitted on latent "
                                 f"descriptors of width {mixture['means'].shape[1]}, but "
                                 f"'{self.model.name}' has {self.latent.width}: it belongs to "
                                 "another model")
        self.mixtures, self.floors = mixtures, floors

    @classmethod
    def fit(cls, model, structures, n_components: int | None = None, max_components: int = 8,
            seed: int = 0, progress: bool = True) -> "LatentGMM":
        """Fit one mixture per element on the latent descriptors of the training `structures`
        (no labels needed), with `n_components` Gaussians or the number of lowest BIC."""
        model = as_model(model)
        descriptors, numbers = LatentModel(model).training_descriptors(
            load_structures(structures), progress=progress)
        mixtures, floors = {}, {}
        for element in np.unique(numbers):
            mine = descriptors[numbers == element]
            mixtures[int(element)] = fit_mixture(mine, n_components, max_components, seed)
            floors[int(element)] = float(negative_log_likelihood(mixtures[int(element)],
                                                                 mine).min())
        return cls(model, mixtures, floors)

    @property
    def n_components(self) -> dict:
        """Number of Gaussians of each element's mixture."""
        return {z: len(m["weights"]) for z, m in self.mixtures.items()}

    def latent_nll(self, numbers: np.ndarray, descriptors: torch.Tensor) -> torch.Tensor:
        """NLL (N,) in nats of atoms with atomic `numbers` (N,) and latent `descriptors` (N, D),
        differentiable in the descriptors."""
        nll = torch.zeros(len(numbers), dtype=torch.float64)
        for element in np.unique(numbers):
            if int(element) not in self.mixtures:
                raise ValueError(f"the Gaussian mixture has no {chemical_symbols[element]} "
                                 f"(it has {[chemical_symbols[z] for z in self.mixtures]})")
            rows = torch.as_tensor(numbers == element)
            nll = nll.index_put((rows,), mixture_nll(self.mixtures[int(element)],
                                                     descriptors[rows]))
        return nll

    def floor(self, numbers: np.ndarray) -> np.ndarray:
        """The lowest training NLL (nats) of the element of each atom: atomic_uncertainty's zero."""
        return np.array([self.floors[int(z)] for z in numbers])

    def predict(self, atoms, uncertainty: bool = True) -> Prediction:
        """Model energy, forces, stress, and atomic_uncertainty = NLL above the training floor;
        with uncertainty=False the model's results alone (atomic_uncertainty None, extra only
        "energies"), for the steps a monitor does not read."""
        if not uncertainty:
            return model_alone(self.model, atoms)
        output, descriptors = self.latent.predict(atoms)
        nll = self.latent_nll(atoms.numbers, torch.as_tensor(descriptors)).numpy()
        floor = self.floor(atoms.numbers)
        return Prediction(energy=output.energy, forces=output.forces, stress=output.stress,
                          atomic_uncertainty=nll - floor,
                          extra={"energies": output.atomic_energies, "latent_nll": nll})

    def state_sha256(self) -> str:
        """SHA-256 of the mixtures and floors."""
        digest = hashlib.sha256()
        for element in sorted(self.mixtures):
            for name in MIXTURE_ARRAYS:
                digest.update(np.ascontiguousarray(self.mixtures[element][name]).tobytes())
            digest.update(np.array(self.floors[element]).tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write the mixtures to one .npz file."""
        elements = sorted(self.mixtures)
        arrays = {f"{name}_{z}": self.mixtures[z][name] for z in elements for name in MIXTURE_ARRAYS}
        save_estimator(path, self.kind, FORMAT_VERSION, self.model, elements=np.array(elements),
                       floors=np.array([self.floors[z] for z in elements]), **arrays)

    @classmethod
    def load(cls, path: str | Path, model: str | Path | None = None) -> "LatentGMM":
        """Read a file written by `save` (model next to it unless given; another is refused)."""
        stored, model = load_estimator(path, cls.kind, FORMAT_VERSION, model)
        elements = [int(z) for z in stored["elements"]]
        mixtures = {z: {name: stored[f"{name}_{z}"] for name in MIXTURE_ARRAYS} for z in elements}
        return cls(model, mixtures, dict(zip(elements, stored["floors"].tolist())))
