"""Last-layer (local) prediction rigidity of one MACE model.

Chong et al., Faraday Discuss. 2024 (seed 000), Eqs. 2-8, and JCTC 2023 (seed 001), Eq. 14:
a MACE atomic energy is linear in the weights w of the final linear maps of its readouts,
E_j = E0_j + shift + scale x pair_j + f_j . w (pair_j: the fixed ZBL repulsion of models trained
with it), so with F the last-layer features of the training set the
Gauss-Newton Hessian of a squared loss is H = sum_s F_s F_s^T (+ force terms) and

    PR_*  = 1 / (F_*^T (H + zeta^2 I)^-1 F_*)     structure, F_* = sum_j f_j
    LPR_j = 1 / (f_j^T (H + zeta^2 I)^-1 f_j)     atom j
    CPR_C = 1 / (g_C^T (H + zeta^2 I)^-1 g_C)     component C (Table 1, Sec. 5)

For MACE the additive components are the readouts of the interaction layers: the energy is the
sum of every readout's contribution, and g_C is F_* (or f_j) restricted to the weights of
readout C, zero outside its block.

The per-atom uncertainty (target "energy") is scale / sqrt(LPR_j) (GPR variance = mu / LPR,
seed 001 Eq. 17). With target "forces" it is the spread of atom j's force under the posterior
w ~ N(w*, scale^2 (H + zeta^2 I)^-1), exact or sampled (`force_posterior`), in eV/A.
Element-relative, it is scale x sqrt((1/LPR_j) / <1/LPR>_Z), <1/LPR>_Z the mean over the training
atoms of atom j's element: the features of different elements live on different scales, so the
raw LPR of a two-element model ranks the atoms of one element (often the minority) above the
other's whatever their environment; relative to its own element's training atoms, an atom is
uncertain because its environment is unlike those its element was trained on. The raw LPR stays
in extra["atomic_rigidity"].
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..common.settings import (
    finite_array,
    non_negative_integer,
    non_negative_number,
    positive_number,
)
from ..common.structures import load_structures
from .files import load_estimator, save_estimator
from .force_posterior import (
    force_covariance,
    forces_with_feature_derivatives,
    posterior_perturbations,
)
from .mace_model import MaceModel, as_model
from .prediction import Prediction, force_uncertainty, model_alone

FORMAT_VERSION = 2
MAX_CONDITION = 1e12
SETTINGS = ("regularizer", "forces", "force_weight", "scale", "n_structures")  # one value each
# the force target's settings, absent from files of the energy target (one value each)
FORCE_SETTINGS = {"target": "energy", "samples": 0, "seed": 0}
TARGETS = ("energy", "forces")


class LastLayerFeatures:
    """Per-atom last-layer features f_j (eV per unit weight) of a MACE model.

    Hooks on the final linear map of every readout capture its input during each forward pass;
    `f_j` is the derivative of atom j's energy with respect to those maps' weights, the model's
    scale included, so that `features() @ weights` is the readout part of the atomic energies.
    """

    def __init__(self, model: MaceModel):
        module = model.module
        head = model.heads.index(model.head)
        scale = energy_scale(model)
        self._inputs: list[torch.Tensor | None] = [None] * len(module.readouts)
        self._maps, weights, self._hooks = [], [], []
        for index, readout in enumerate(module.readouts):
            linear = final_linear(readout, model.name)
            feature_map, weight = linear_feature_map(linear, head)
            self._maps.append(scale * feature_map)
            weights.append(weight)
            self._hooks.append(linear.register_forward_pre_hook(partial(self._store, index)))
        self.weights = torch.cat(weights)
        self.dim = int(self.weights.numel())
        # the features of readout (component) C are the columns blocks[C]
        bounds = np.cumsum([0] + [int(w.numel()) for w in weights])
        self.blocks = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def _store(self, index: int, _module, inputs) -> None:
        self._inputs[index] = inputs[0]

    def features(self) -> torch.Tensor:
        """(N, D) features of the atoms of the last forward pass (keeps the autograd graph)."""
        return torch.cat([x @ m for x, m in zip(self._inputs, self._maps)], dim=1)

    def remove(self) -> None:
        """Detach the hooks from the model."""
        for hook in self._hooks:
            hook.remove()


def energy_scale(model: MaceModel) -> float:
    """The factor MACE's scale-shift applies to the readouts of the model's head (1 without)."""
    if not hasattr(model.module, "scale_shift"):
        return 1.0
    return float(torch.atleast_1d(model.module.scale_shift.scale)[model.heads.index(model.head)])


def final_linear(readout: torch.nn.Module, model_name: str) -> torch.nn.Module:
    """The last linear map of a MACE readout block (`linear` or `linear_2`)."""
    for name in ("linear_2", "linear"):
        linear = getattr(readout, name, None)
        if linear is not None:
            if any(pname != "weight" for pname, _ in linear.named_parameters()):
                raise NotImplementedError(
                    f"model '{model_name}': readout {type(readout).__name__} has a bias in its "
                    "final linear map; last-layer LPR supports MACE's standard readouts only")
            return linear
    raise NotImplementedError(
        f"model '{model_name}': unknown readout {type(readout).__name__}, expected MACE's "
        "LinearReadoutBlock or NonLinearReadoutBlock")


def linear_feature_map(linear: torch.nn.Module, head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrix G (n_in, P) with d out[head] / d weight = x @ G, and the P weights concerned.

    The map is bilinear in input and weight, so G follows from evaluating it on unit inputs with
    unit weights; this keeps e3nn's path normalisation without re-deriving it.
    """
    weight = linear.weight.detach()
    eye = torch.eye(linear.irreps_in.dim, dtype=weight.dtype, device=weight.device)
    columns = []
    for p in range(weight.numel()):
        unit = torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
        unit[p] = 1.0
        out = torch.func.functional_call(linear, {"weight": unit.view_as(weight)}, (eye,))
        columns.append(out[:, head])
    feature_map = torch.stack(columns, dim=1)
    used = feature_map.abs().sum(dim=0) > 0
    return feature_map[:, used], weight.reshape(-1)[used]


def choose_regularizer(hessian: np.ndarray) -> float:
    """Smallest zeta^2 = 10^k x (largest eigenvalue) keeping H + zeta^2 I positive definite with
    condition number <= 1e12, so that its Cholesky factor is accurate in double precision."""
    eigenvalues = np.linalg.eigvalsh(hessian)
    top = max(float(eigenvalues[-1]), np.finfo(float).tiny)
    for exponent in range(-16, 3):
        regularizer = top * 10.0**exponent
        low, high = eigenvalues[0] + regularizer, eigenvalues[-1] + regularizer
        if low > 0 and high / low <= MAX_CONDITION:
            return regularizer
    raise np.linalg.LinAlgError("no regularizer makes the Gauss-Newton matrix positive definite")


class LastLayerLPR:
    """Single-model uncertainty from the last-layer local prediction rigidity (LPR).

    Build with `LastLayerLPR.fit(model, structures)` or `LastLayerLPR.load("llpr.npz")`.
    `predict(atoms)` gives the model's energy, forces and stress with, for target "energy",
    atomic_uncertainty = scale / sqrt(LPR_j) (unit of `scale`, eV for a calibrated scale;
    dimensionless for the default scale 1).

    target "forces": atomic_uncertainty is the spread of atom j's force under the last-layer
    posterior N(w*, scale^2 (H + zeta^2 I)^-1) (`force_posterior`), with the committee's formula
    s_j = (1/3) sum_k std(F_jk) (eV/A for scale = alpha in eV; `scale` 1 gives it per eV of
    alpha). samples = 0: exact, std(F_jk) = sqrt(var F_jk), D backward passes per call; K > 0:
    the unbiased standard deviation of K force sets from K weight vectors drawn once (`seed`),
    K backward passes, like a last-layer committee of K members.

    `predict(atoms, uncertainty=False)` runs the model alone, for the steps a monitor does not
    read (either target).

    ValueError names a setting out of range (regularizer and scale > 0, force_weight >= 0,
    samples 0 or >= 2) or a Gauss-Newton matrix that is not finite and symmetric.
    """

    kind = "llpr"

    def __init__(self, model: MaceModel | str | Path, hessian: np.ndarray, regularizer: float,
                 forces: bool, force_weight: float = 1.0, scale: float = 1.0,
                 n_structures: int = 0, element_reference: dict[int, float] | None = None,
                 target: str = "energy", samples: int = 0, seed: int = 0):
        if target not in TARGETS:
            raise ValueError(f"target must be 'energy' (the LPR of atomic energies) or 'forces' "
                             f"(the posterior spread of the forces), got {target!r}")
        self.target = target
        self.samples = non_negative_integer("samples", samples)
        if self.samples == 1:
            raise ValueError("samples must be 0 (exact force variance) or at least 2 (the "
                             "spread of one force set is undefined)")
        self.seed = non_negative_integer("seed", seed)
        self.regularizer = positive_number("regularizer", regularizer, meaning="number (eV^2)")
        self.forces = bool(forces)
        self.force_weight = non_negative_number("force_weight", force_weight)
        self.scale = positive_number("scale", scale)
        self.n_structures = non_negative_integer("n_structures", n_structures)
        hessian = finite_array("hessian (the Gauss-Newton matrix)", hessian, row="row")
        self.model = as_model(model)
        self.features = LastLayerFeatures(self.model)
        if hessian.shape != (self.features.dim, self.features.dim):
            raise ValueError(f"Gauss-Newton matrix of shape {hessian.shape} does not match the "
                             f"{self.features.dim} last-layer features of '{self.model.name}'")
        if not np.allclose(hessian, hessian.T, rtol=0, atol=1e-9 * np.abs(hessian).max()):
            raise ValueError("hessian (the Gauss-Newton matrix) must be symmetric")
        self.hessian = hessian
        self._factorize()
        self._component: int | None = None
        self.element_reference = None
        if element_reference is not None:
            self._energy_target_only("an element reference")
            self.element_reference = {int(z): positive_number(f"<1/LPR> of element {z}", v)
                                      for z, v in element_reference.items()}

    def _energy_target_only(self, what: str) -> None:
        if self.target != "energy":
            raise ValueError(f"{what} belongs to the energy LPR (target 'energy'); this LLPR's "
                             "target is 'forces'")

    @property
    def component(self) -> int | None:
        """None: the monitor's uncertainty is scale / sqrt(LPR_j); k: scale / sqrt(CPR_jk), the
        local rigidity of readout k alone (see `atomic_component_rigidity`). Not saved."""
        return self._component

    @component.setter
    def component(self, value: int | None) -> None:
        readouts = len(self.features.blocks)
        if value is not None:
            self._energy_target_only("a component's rigidity")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or not 0 <= value < readouts):
            raise ValueError(f"component must be None or a readout index 0-{readouts - 1} of "
                             f"'{self.model.name}', got {value!r}")
        self._component = None if value is None else int(value)

    def _factorize(self) -> None:
        # torch, not scipy, for all run-time linear algebra: a second BLAS thread pool spinning
        # beside torch's slows every model call down (measured 2.7x on 2 cores)
        matrix = torch.as_tensor(self.hessian + self.regularizer * np.eye(len(self.hessian)))
        self._cholesky, info = torch.linalg.cholesky_ex(matrix)
        if info.item() != 0:
            raise ValueError(f"H + regularizer I is not positive definite (regularizer = "
                             f"{self.regularizer:g}); give a larger regularizer")
        # target "forces": the (R, D) directions along which the summed features are
        # differentiated, the identity (exact) or unit-scale perturbations drawn from this
        # posterior (so again after each update); None for the energy target
        self.force_directions = None
        if self.target == "forces":
            self.force_directions = (torch.eye(self.features.dim, dtype=self._cholesky.dtype)
                                if self.samples == 0 else posterior_perturbations(
                                    self._cholesky, self.samples, self.seed))

    @property
    def cholesky(self) -> torch.Tensor:
        """L, the lower Cholesky factor of H + regularizer I (eV^2), as the LAMMPS export
        stores it."""
        return self._cholesky

    @classmethod
    def fit(cls, model, structures, forces: bool = True, regularizer: float | None = None,
            force_weight: float = 1.0, scale: float = 1.0, progress: bool = True,
            element_relative: bool = False, target: str = "energy", samples: int = 0,
            seed: int = 0) -> "LastLayerLPR":
        """Accumulate the Gauss-Newton matrix of `model` (path or MaceModel) over `structures`
        (file or list of Atoms; no labels needed), with force terms when `forces`.
        `regularizer` is zeta^2 (eV^2); chosen by `choose_regularizer` when None. With
        `element_relative`, uncertainties are relative to the same structures' atoms of each
        element (`relative_to_elements`). target, samples, seed: see the class."""
        regularizer = positive_number("regularizer", regularizer, allow_none=True,
                                      meaning="number (eV^2)")
        model = as_model(model)
        structures = load_structures(structures)
        features = LastLayerFeatures(model)
        try:
            hessian = gauss_newton(model, features, structures, forces, force_weight, progress)
        finally:
            features.remove()
        if regularizer is None:
            regularizer = choose_regularizer(hessian)
        estimator = cls(model, hessian, regularizer, forces, force_weight, scale,
                        len(structures), target=target, samples=samples, seed=seed)
        if element_relative:
            estimator.relative_to_elements(structures)
        return estimator

    def relative_to_elements(self, structures) -> None:
        """Make the uncertainty element-relative: <1/LPR>_Z is the mean 1/LPR of the atoms of
        each element in `structures` (file or list of Atoms: the training structures)."""
        self._energy_target_only("element-relative uncertainty")
        totals: dict[int, list[float]] = {}
        for atoms in load_structures(structures):
            inverse = self._inverse_quadratic(self._atomic_features(atoms))
            for number in np.unique(atoms.numbers):
                totals.setdefault(int(number), []).extend(inverse[atoms.numbers == number])
        missing = sorted(set(self.model.elements) - set(totals))
        if missing:
            raise ValueError(f"the structures hold no atom of element(s) {missing} of "
                             f"'{self.model.name}': no reference for them")
        self.element_reference = {z: float(np.mean(v)) for z, v in sorted(totals.items())}

    def _relative(self, inverse_rigidity: np.ndarray, numbers) -> np.ndarray:
        """1/LPR_j divided by <1/LPR> of atom j's element (unchanged without a reference)."""
        if self.element_reference is None:
            return inverse_rigidity
        unknown = sorted(set(int(z) for z in numbers) - set(self.element_reference))
        if unknown:
            raise ValueError(f"no element reference for atomic number(s) {unknown}: the LLPR "
                             "was made element-relative on structures without them")
        return inverse_rigidity / np.array([self.element_reference[int(z)] for z in numbers])

    def with_target(self, target: str, samples: int = 0, seed: int = 0) -> "LastLayerLPR":
        """The same posterior (model, Gauss-Newton matrix, regularizer, scale) read for another
        `target`, e.g. an energy LLPR file's posterior carried to the forces without fitting H
        again. The element reference belongs to the energy target and is kept only there; the
        model object is shared."""
        reference = self.element_reference if target == "energy" else None
        return type(self)(self.model, self.hessian, self.regularizer, self.forces,
                          self.force_weight, self.scale, self.n_structures, reference,
                          target=target, samples=samples, seed=seed)

    def update(self, structures, progress: bool = False) -> None:
        """Add `structures` to the training set's Gauss-Newton matrix (regularizer unchanged)."""
        structures = load_structures(structures)
        self.hessian = self.hessian + gauss_newton(self.model, self.features, structures,
                                                   self.forces, self.force_weight, progress)
        self.n_structures += len(structures)
        self._factorize()

    def whitened(self, vectors) -> torch.Tensor:
        """L^-1 v for each column v of `vectors` (D, k), L L^T = H + zeta^2 I: then
        v^T (H + zeta^2 I)^-1 v is the squared norm of its column."""
        vectors = torch.as_tensor(vectors).detach().to(self._cholesky.dtype)
        return torch.linalg.solve_triangular(self._cholesky, vectors, upper=False)

    def inverse_rigidity(self, features: torch.Tensor) -> torch.Tensor:
        """1/LPR_j = f_j^T (H + zeta^2 I)^-1 f_j of each row of `features` (N, D), as a tensor
        differentiable in the features (for gradients with respect to the positions)."""
        solved = torch.linalg.solve_triangular(
            self._cholesky, features.to(self._cholesky.dtype).T, upper=False)
        return (solved * solved).sum(dim=0)

    def _inverse_quadratic(self, features: torch.Tensor) -> np.ndarray:
        """f^T (H + zeta^2 I)^-1 f for each row f of `features` (N, D)."""
        solved = self.whitened(features.T)
        return (solved * solved).sum(dim=0).cpu().numpy()

    def _atomic_features(self, atoms) -> torch.Tensor:
        with torch.no_grad():
            self.model.module(self.model.graph(atoms), compute_force=False)
            return self.features.features()

    def atomic_features(self, atoms) -> np.ndarray:
        """Last-layer features f_j of every atom of `atoms`, shape (N, D) (eV per unit weight)."""
        return self._atomic_features(atoms).detach().cpu().numpy().astype(float)

    def gauss_newton_factors(self, structures, progress: bool = False) -> list[np.ndarray]:
        """For each structure (no labels needed) a matrix U_s (D, r), r <= D, with U_s U_s^T its
        term of the Gauss-Newton matrix as `update` would add it (energy and, if the LLPR has
        them, force terms): what adding it to the training set adds to H."""
        return gauss_newton_factors(self.model, self.features, load_structures(structures),
                                    self.forces, self.force_weight, progress)

    def _component_inverse_quadratic(self, features: torch.Tensor) -> np.ndarray:
        """g_C^T (H + zeta^2 I)^-1 g_C for each row of `features` (N, D) and each component C,
        g_C being the row with every column outside block C set to zero: shape (N, C)."""
        columns = []
        for block in self.features.blocks:
            restricted = torch.zeros_like(features)
            restricted[:, block] = features[:, block]
            columns.append(self._inverse_quadratic(restricted))
        return np.stack(columns, axis=1)

    def component_rigidity(self, atoms) -> np.ndarray:
        """Component-wise prediction rigidity CPR_C of the total energy of `atoms`, one value
        per readout of the model (interaction layer), shape (C,) (dimensionless; seed 000,
        Table 1: g_C = d E_C / d w, E_C the readout's energy, zero outside its weights)."""
        total = self._atomic_features(atoms).sum(dim=0, keepdim=True)
        return 1.0 / self._component_inverse_quadratic(total)[0]

    def atomic_component_rigidity(self, atoms) -> np.ndarray:
        """CPR of every atom's energy contribution from every readout, shape (N, C)."""
        return 1.0 / self._component_inverse_quadratic(self._atomic_features(atoms))

    def rigidity(self, atoms) -> float:
        """Prediction rigidity PR of the total energy of `atoms` (dimensionless)."""
        total = self._atomic_features(atoms).sum(dim=0, keepdim=True)
        return float(1.0 / self._inverse_quadratic(total)[0])

    def atomic_rigidity(self, atoms) -> np.ndarray:
        """Local prediction rigidity LPR_j of every atom of `atoms`, shape (N,)."""
        return 1.0 / self._inverse_quadratic(self._atomic_features(atoms))

    def force_covariance(self, atoms) -> np.ndarray:
        """(N, 3, 3) posterior covariance of every atom's force components, scale^2 g_jk^T
        (H + zeta^2 I)^-1 g_jl ((eV/A)^2 for scale = alpha in eV), exact."""
        dim = self.features.dim
        _, jacobian = forces_with_feature_derivatives(
            self.model, self.features, atoms, torch.eye(dim, dtype=self._cholesky.dtype))
        return force_covariance(jacobian, self._cholesky, self.scale)

    def _predict_forces(self, atoms) -> Prediction:
        """The force target's prediction (see the class)."""
        output, derivatives = forces_with_feature_derivatives(
            self.model, self.features, atoms, self.force_directions)
        features = self.features.features().detach()
        extra = {"energies": output.atomic_energies,
                 "atomic_rigidity": 1.0 / self._inverse_quadratic(features)}
        if self.samples == 0:
            variance = np.diagonal(force_covariance(derivatives, self._cholesky, self.scale),
                                   axis1=1, axis2=2)
            extra["force_variance"] = variance
            atomic = np.sqrt(variance).mean(axis=1)
        else:  # E_s = E + sum_i f_i . delta_s, so F_s = F - G^T delta_s
            members = output.forces[None] - self.scale * derivatives
            extra["forces_contributions"] = members
            atomic = force_uncertainty(members)
        return Prediction(energy=output.energy, forces=output.forces, stress=output.stress,
                          atomic_uncertainty=atomic, extra=extra)

    def predict(self, atoms, uncertainty: bool = True) -> Prediction:
        """Model energy, forces, stress, and atomic_uncertainty = scale / sqrt(LPR_j) (or of
        CPR_jk with `component` k), relative to its element's training atoms if so made; for
        target "forces" the posterior force spread (see the class).

        uncertainty=False: the model alone (atomic_uncertainty None, extra only "energies"),
        as a monitor asks between monitored steps: no last-layer features, no triangular
        solve, no backward pass of the force target."""
        if not uncertainty:
            return model_alone(self.model, atoms)
        if self.target == "forces":
            return self._predict_forces(atoms)
        _, output = self.model.run(atoms)
        features = self.features.features().detach()
        inverse_rigidity = self._inverse_quadratic(features)
        frame = self._inverse_quadratic(features.sum(dim=0, keepdim=True))[0]
        monitored = inverse_rigidity if self.component is None else (
            self._component_inverse_quadratic(features)[:, self.component])
        monitored = self._relative(monitored, atoms.numbers)
        return Prediction(
            energy=output.energy, forces=output.forces, stress=output.stress,
            atomic_uncertainty=self.scale * np.sqrt(monitored),
            extra={"energies": output.atomic_energies, "atomic_rigidity": 1.0 / inverse_rigidity,
                   "rigidity": float(1.0 / frame)})

    @property
    def unit(self) -> str:
        """Unit of atomic_uncertainty: that of `scale` over sqrt(LPR) (or sqrt(CPR_k)); eV/A
        for the force target (per eV of alpha for scale 1)."""
        if self.target == "forces":
            return "eV/A" if self.scale != 1 else "eV/A per eV of alpha"
        rigidity = "LPR" if self.component is None else f"CPR_{self.component}"
        if self.element_reference is not None:
            rigidity = f"{rigidity}/<{rigidity}>_element"
        return f"1/sqrt({rigidity})" if self.scale == 1 else f"{self.scale:g}/sqrt({rigidity})"

    def state_sha256(self) -> str:
        """SHA-256 of the Gauss-Newton matrix, regularizer and scale (and element reference, and
        the force target's samples and seed)."""
        digest = hashlib.sha256(np.ascontiguousarray(self.hessian).tobytes())
        digest.update(np.array([self.regularizer, self.scale]).tobytes())
        if self.target == "forces":
            digest.update(f"forces {self.samples} {self.seed}".encode())
        if self.element_reference is not None:
            digest.update(np.array(sorted(self.element_reference.items()), dtype=float).tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write the estimator to one .npz file (model referenced by relative path and SHA-256)."""
        reference = {} if self.element_reference is None else {
            "reference_numbers": np.array(list(self.element_reference), dtype=int),
            "reference_inverse_rigidity": np.array(list(self.element_reference.values()))}
        force_target = {} if self.target == "energy" else {
            "target": self.target, "samples": self.samples, "seed": self.seed}
        save_estimator(path, "llpr", FORMAT_VERSION, self.model, hessian=self.hessian,
                       regularizer=self.regularizer, forces=self.forces,
                       force_weight=self.force_weight, scale=self.scale,
                       n_structures=self.n_structures, **reference, **force_target)

    @classmethod
    def load(cls, path: str | Path, model: str | Path | None = None) -> "LastLayerLPR":
        """Read a file written by `save`. The model is found next to the file unless given;
        a model that is not the one the matrix was fitted for is refused, and so is a missing
        or bad field (ValueError naming the file and the field)."""
        stored, model = load_estimator(path, "llpr", FORMAT_VERSION, model)
        again = "fit it again with `mdmonitor fit-llpr`"
        missing = [name for name in ("hessian", *SETTINGS) if name not in stored]
        if missing:
            raise ValueError(f"LLPR file '{path}' lacks {', '.join(missing)}; {again}")
        try:
            for name in SETTINGS + tuple(n for n in FORCE_SETTINGS if n in stored):
                if stored[name].size != 1:
                    raise ValueError(f"{name} must be one value, got shape {stored[name].shape}")
            reference = None
            if "reference_numbers" in stored or "reference_inverse_rigidity" in stored:
                numbers = stored.get("reference_numbers", np.array([]))
                values = stored.get("reference_inverse_rigidity", np.array([]))
                if numbers.shape != values.shape or numbers.ndim != 1:
                    raise ValueError("reference_numbers and reference_inverse_rigidity must be "
                                     "two 1-D arrays of one length")
                reference = dict(zip(numbers.tolist(), values.tolist()))
            force_target = {name: stored[name].item() if name in stored else default
                            for name, default in FORCE_SETTINGS.items()}
            return cls(model, stored["hessian"], element_reference=reference, **force_target,
                       **{name: stored[name].item() for name in SETTINGS})
        except ValueError as err:
            raise ValueError(f"LLPR file '{path}': {err}; {again}") from None


def gauss_newton_batches(model: MaceModel, features: LastLayerFeatures, structures: list,
                         forces: bool, progress: bool, batch_size: int = 16,
                         desc: str = "LLPR fit"):
    """Yield, for `batch_size` structures at a time, their summed features F_s (n, D), the
    Jacobian J = dF_s/dr of the batch (D, n_atoms, 3; None without `forces`) and the structure
    index of every atom (n_atoms,).

    One backward pass per feature gives the position derivatives of every structure of the
    batch at once, since each F_s depends on its own positions only.
    """
    with tqdm(total=len(structures), desc=desc, unit="structure",
              disable=not progress) as bar:
        for start in range(0, len(structures), batch_size):
            chunk = structures[start:start + batch_size]
            graph = model.graph(chunk)
            positions = graph["positions"]
            positions.requires_grad_(forces)
            with torch.set_grad_enabled(forces):
                model.module(graph, compute_force=False)
                atomic = features.features()
                summed = torch.zeros(len(chunk), features.dim, dtype=atomic.dtype)
                summed = summed.index_add(0, graph["batch"], atomic)
            jacobian = None
            if forces:
                jacobian = torch.autograd.grad(
                    summed.sum(dim=0), positions, is_grads_batched=True,
                    grad_outputs=torch.eye(features.dim, dtype=atomic.dtype))[0]
                jacobian = jacobian.detach().to(torch.float64)
            yield summed.detach().to(torch.float64), jacobian, graph["batch"]
            bar.update(len(chunk))


def gauss_newton(model: MaceModel, features: LastLayerFeatures, structures: list, forces: bool,
                 force_weight: float, progress: bool, batch_size: int = 16) -> np.ndarray:
    """sum_s F_s F_s^T + force_weight sum_s J_s J_s^T, with F_s = sum_j f_j and
    J_s = dF_s/dr (D x 3N) the last-layer derivatives of the forces (seed 000 Eq. 6);
    sum_s J_s J_s^T sums over all atoms of a batch at once."""
    hessian = torch.zeros(features.dim, features.dim, dtype=torch.float64)
    for energy_terms, jacobian, _ in gauss_newton_batches(model, features, structures, forces,
                                                          progress, batch_size):
        hessian += energy_terms.T @ energy_terms
        if jacobian is not None:
            jacobian = jacobian.reshape(features.dim, -1)
            hessian += force_weight * jacobian @ jacobian.T
    return hessian.cpu().numpy()


def gauss_newton_factors(model: MaceModel, features: LastLayerFeatures, structures: list,
                         forces: bool, force_weight: float, progress: bool,
                         batch_size: int = 16) -> list[np.ndarray]:
    """Per structure s, U_s (D, r) with U_s U_s^T = F_s F_s^T + force_weight J_s J_s^T
    (`gauss_newton` of s alone): [F_s, sqrt(force_weight) J_s], reduced to r = D columns by a QR
    decomposition when it has more."""
    factors = []
    for energy_terms, jacobian, batch in gauss_newton_batches(
            model, features, structures, forces, progress, batch_size,
            desc="Gauss-Newton terms"):
        for s, energy in enumerate(energy_terms):
            columns = [energy[:, None]]
            if jacobian is not None:
                own = jacobian[:, batch == s].reshape(features.dim, -1)
                columns.append(float(np.sqrt(force_weight)) * own)
            factor = torch.cat(columns, dim=1)
            if factor.shape[1] > features.dim:
                factor = torch.linalg.qr(factor.T, mode="r")[1].T
            factors.append(factor.cpu().numpy())
    return factors
