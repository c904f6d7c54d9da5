"""Adversarial sampling: displace a structure towards where the model is uncertain, while it
stays thermally likely (Tan et al. 2023, seed 004, Sec. 2.4, Eqs. 15-16, after Schwalbe-Koda,
Tan and Gomez-Bombarelli, Nat. Commun. 12, 5104 (2021)).

Gradient ascent on a displacement delta of the atoms of a structure x maximises (Eq. 15)

    p(x_d) U(x_d),   x_d = x + delta,
    p(x_d) = exp(-e(x_d) / kT) / sum_{x' in train} exp(-e(x') / kT)          (Eq. 16)

with e the energy per atom (eV/atom; the numerator's predicted, the denominator's the training
set's reference energies) and kT in eV per atom: the paper's SI (Sec. III) gives kT per atom and
the authors' code divides the energy by the number of atoms. Without a training set, the
denominator is the start structure's own Boltzmann factor, exp(-e(x)/kT) of its predicted
energy, so p = exp(-(E(x_d) - E(x)) / (N kT)) and p(x) = 1. The denominator does not depend on
delta: it sets the value of p, never the path.

U is the mean over atoms of a per-atom uncertainty that autograd differentiates through the
model: the committee's force variance sigma_F^2 (seed 004 Eq. 5: unbiased variance over members,
mean over atoms and x, y, z; eV^2/A^2), the LLPR variance scale^2 / LPR_j, or the GMM negative
log-likelihood above the element's training floor (nats; the raw NLL can be negative, where
p U would have no useful maximum). LTAU is piecewise constant in the positions (a
nearest-neighbour lookup of binned errors): it has no gradient and is refused.

The ascent climbs log(p U) (same maximiser and direction, and no overflow of exp(-e/kT)). Every
step moves the atoms along the gradient so that the atom moved most moves `step` A; a step that
would put the predicted energy more than `energy_cap` eV above the start's, or lower p U, is
halved, at most MAX_HALVINGS times, and the ascent stops when none is left. As in the authors'
code, delta starts as Gaussian noise (`noise` A), which breaks the symmetry of a perfect crystal,
where every gradient of U vanishes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from scipy.special import logsumexp
from tqdm.auto import tqdm

from ..aggregation import aggregate, checked_cutoff
from ..common.settings import (
    non_negative_integer,
    non_negative_number,
    positive_number,
)
from ..common.structures import load_structures
from ..estimators.committee import Committee
from ..estimators.gmm import LatentGMM
from ..estimators.llpr import LastLayerLPR
from ..estimators.mace_model import MaceModel
from ..estimators.prediction import check_finite
from ..extraction.candidates import CandidateQueue, box_name
from ..extraction.cutting import whole_frame_box
from ..extraction.extractor import Extractor, model_identity

MAX_HALVINGS = 6  # a refused step is tried again at 1/2, 1/4, ... 1/64 of `step`
ENERGY_KEYS = ("REF_energy", "energy")


class CommitteeForceVariance:
    """U_j = (1/3) sum_k var_l F^l_jk, unbiased over the members l (eV^2/A^2): seed 004 Eq. 5
    per atom. Its gradient needs the forces' own graph: a second derivative of every member."""

    name = "committee force variance"
    unit = "eV^2/A^2"

    def __init__(self, committee: Committee):
        if committee.models is None:
            raise ValueError("adversarial sampling differentiates through the models: give a "
                             "committee of MACE model files (Committee.from_mace), not ASE "
                             "calculators")
        self.models = committee.models
        self.model = committee.models[0]

    def terms(self, graph: dict, atoms: Atoms,
              gradient: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(committee mean energy in eV, U_j (N,)); with `gradient`, differentiable in
        graph["positions"]."""
        outputs = [m.evaluate(graph, compute_stress=False, create_graph=gradient)
                   for m in self.models]
        energy = torch.stack([o["energy"].sum() for o in outputs]).mean()
        forces = torch.stack([o["forces"] for o in outputs])
        return energy, forces.var(dim=0, correction=1).mean(dim=1)


class LLPRVariance:
    """U_j = scale^2 / LPR_j = scale^2 f_j^T (H + zeta^2 I)^-1 f_j, f_j the last-layer features."""

    name = "LLPR variance"

    def __init__(self, llpr: LastLayerLPR):
        self.llpr = llpr
        self.model = llpr.model
        self.unit = "1/LPR" if llpr.scale == 1 else f"{llpr.scale:g}^2/LPR"

    def terms(self, graph: dict, atoms: Atoms,
              gradient: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(model energy in eV, U_j (N,)), differentiable in graph["positions"] if it requires
        grad."""
        raw = self.model.evaluate(graph, compute_stress=False, compute_force=False)
        variance = self.llpr.inverse_rigidity(self.llpr.features.features())
        return raw["energy"].sum(), self.llpr.scale**2 * variance


class GMMNegativeLogLikelihood:
    """U_j = -log p(xi_j) minus the lowest training NLL of the element (nats), xi_j the
    latent descriptor: the GMM estimator's atomic_uncertainty (seed 004 Eq. 11)."""

    name = "GMM negative log-likelihood"
    unit = "nats"

    def __init__(self, gmm: LatentGMM):
        self.gmm = gmm
        self.model = gmm.model

    def terms(self, graph: dict, atoms: Atoms,
              gradient: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(model energy in eV, U_j (N,)), differentiable in graph["positions"] if it requires
        grad."""
        raw = self.model.evaluate(graph, compute_stress=False, compute_force=False)
        nll = self.gmm.latent_nll(atoms.numbers, self.gmm.latent.descriptor_tensor(raw))
        return raw["energy"].sum(), nll - torch.as_tensor(self.gmm.floor(atoms.numbers))


def differentiable_uncertainty(estimator):
    """The U of `estimator` (a MACE Committee, LastLayerLPR or LatentGMM) for the ascent."""
    for kind, uncertainty in ((Committee, CommitteeForceVariance), (LastLayerLPR, LLPRVariance),
                              (LatentGMM, GMMNegativeLogLikelihood)):
        if isinstance(estimator, kind):
            return uncertainty(estimator)
    raise ValueError(f"adversarial sampling needs an uncertainty with a gradient: a committee, "
                     f"LLPR or GMM estimator, not {type(estimator).__name__} (LTAU's is a "
                     "nearest-neighbour lookup, piecewise constant in the positions)")


@dataclass
class Evaluation:
    """The objective at one structure: predicted energy (eV), U and its per-atom terms, log p
    (Eq. 16) and the gradient of log(p U) with respect to the positions (1/A; None when U <= 0,
    where log(p U) is -inf)."""

    energy: float
    atomic_uncertainty: np.ndarray
    uncertainty: float
    log_probability: float
    gradient: np.ndarray | None

    @property
    def log_objective(self) -> float:
        """log(p U), -inf when U <= 0."""
        return (self.log_probability + math.log(self.uncertainty) if self.uncertainty > 0
                else -math.inf)


def evaluate(uncertainty, atoms: Atoms, kT: float, log_partition: float,
             gradient: bool = True) -> Evaluation:
    """Energy, U, log p and (if `gradient`) the gradient of log(p U) at `atoms`, by autograd
    through the model. kT in eV per atom; log_partition = log of Eq. 16's denominator."""
    model: MaceModel = uncertainty.model
    graph = model.graph(atoms)  # (refuses elements the model does not know, NaN positions)
    positions = graph["positions"].requires_grad_(gradient)
    with torch.set_grad_enabled(True):  # (MACE's forces are a gradient, even without ours)
        energy, atomic = uncertainty.terms(graph, atoms, gradient)
    check_finite(f"model '{model.name}'", "energy", energy.item())
    check_finite(uncertainty.name, "uncertainty", atomic.detach().cpu().numpy())
    log_probability = -(energy / len(atoms)) / kT - log_partition
    mean = atomic.mean()
    slope = None
    if gradient and mean.item() > 0:
        objective = log_probability + torch.log(mean)
        slope = torch.autograd.grad(objective, positions)[0].detach().cpu().numpy()
    return Evaluation(float(energy.item()), atomic.detach().cpu().numpy().astype(float),
                      float(mean.item()), float(log_probability.item()), slope)


def training_energies(structures) -> np.ndarray:
    """Reference energies per atom (eV/atom) of the training `structures` (file or Atoms list):
    the REF_energy info value, else the energy stored with the frame."""
    energies = []
    for index, atoms in enumerate(load_structures(structures)):
        energy = atoms.info.get("REF_energy")
        if energy is None and atoms.calc is not None:
            try:
                energy = atoms.calc.get_property("energy", atoms, allow_calculation=False)
            except PropertyNotImplementedError:
                energy = None
        if energy is None:
            raise ValueError(f"training frame {index} has no reference energy (looked for "
                             f"{' and '.join(ENERGY_KEYS)}): Eq. 16 normalises p by the "
                             "training set's reference energies; label every frame, or leave "
                             "the training set out to normalise by the start structure")
        energies.append(float(energy) / len(atoms))
    energies = np.array(energies)
    check_finite("the training set", "reference energies", energies)
    return energies


@dataclass
class AscentStep:
    """One accepted step: U, predicted energy above the start (eV), log p, the largest atomic
    displacement of the step (A; the start noise at iteration 0) and how often it was halved."""

    iteration: int
    uncertainty: float
    energy_above_start: float
    log_probability: float
    displacement: float
    halvings: int


@dataclass
class AdversarialSample:
    """The structure the ascent ended at (its per-atom U in arrays["adversarial_uncertainty"]),
    every accepted step, why it stopped and the start's predicted energy (eV)."""

    atoms: Atoms
    history: list[AscentStep]
    stop_reason: str
    start_energy: float
    unit: str
    info: dict = field(default_factory=dict)

    @property
    def atomic_uncertainty(self) -> np.ndarray:
        return self.atoms.arrays["adversarial_uncertainty"]


class AdversarialSampler:
    """Gradient ascent of p U from given structures (see the module docstring).

    estimator: a MACE `Committee`, `LastLayerLPR` or `LatentGMM`. kT: eV per atom. step: A, the
    largest displacement of any atom in one step. iterations: steps at most. energy_cap: eV, how
    far the predicted energy may rise above the start's. noise: A, the Gaussian start
    displacement. seed: with the sample number, seeds that noise. training_set: labelled training
    structures for Eq. 16's denominator (default: the start structure, p = 1 there).
    A bad setting raises ValueError naming it.
    """

    def __init__(self, estimator, kT: float, step: float = 0.02, iterations: int = 20,
                 energy_cap: float = 1.0, noise: float = 0.01, seed: int = 0,
                 training_set=None):
        self.kT = positive_number("kT", kT, meaning="energy in eV per atom")
        self.step = positive_number("step", step, meaning="displacement in A")
        self.iterations = non_negative_integer("iterations", iterations)
        self.energy_cap = positive_number("energy_cap", energy_cap, meaning="energy in eV")
        self.noise = non_negative_number("noise", noise, meaning="displacement in A")
        self.seed = non_negative_integer("seed", seed)
        self.estimator = estimator
        self.uncertainty = differentiable_uncertainty(estimator)
        self.training_energies = (None if training_set is None
                                  else training_energies(training_set))

    def log_partition(self, start_energy: float, n_atoms: int) -> float:
        """log of Eq. 16's denominator: over the training set, or the start's own term."""
        if self.training_energies is None:
            return -start_energy / n_atoms / self.kT
        return float(logsumexp(-self.training_energies / self.kT))

    def evaluate(self, atoms: Atoms, log_partition: float, gradient: bool = True) -> Evaluation:
        """`evaluate` with this sampler's U and kT."""
        return evaluate(self.uncertainty, atoms, self.kT, log_partition, gradient)

    def sample(self, atoms: Atoms, sample: int = 0, progress: bool = False) -> AdversarialSample:
        """Ascend from `atoms` (not changed); `sample` numbers the start noise."""
        start = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        start_energy = self._energy(start)
        log_partition = self.log_partition(start_energy, len(start))
        rng = np.random.default_rng([self.seed, non_negative_integer("sample", sample)])
        current = start.copy()
        current.positions += rng.normal(scale=self.noise, size=current.positions.shape)
        now = self.evaluate(current, log_partition)
        if now.energy - start_energy > self.energy_cap:  # noise of more than the cap: none
            current = start.copy()
            now = self.evaluate(current, log_partition)
        if now.gradient is None:
            raise ValueError(f"U ({self.uncertainty.name}) is {now.uncertainty:.3g} "
                             f"{self.uncertainty.unit} at the start: p U has no useful maximum "
                             "where U <= 0")
        moved = float(np.linalg.norm(current.positions - start.positions, axis=1).max())
        history = [AscentStep(0, now.uncertainty, now.energy - start_energy,
                              now.log_probability, moved, 0)]
        reason = f"{self.iterations} iterations done"
        for iteration in tqdm(range(1, self.iterations + 1), desc="adversarial ascent",
                              unit="step", disable=not progress):
            if not np.linalg.norm(now.gradient, axis=1).max() > 0:
                reason = f"the gradient of p U vanished at iteration {iteration - 1}"
                break
            taken = self._step(current, now, start_energy, log_partition)
            if taken is None:
                reason = (f"no step down to {self.step / 2**MAX_HALVINGS:.2g} A raised p U "
                          f"within the energy cap at iteration {iteration}")
                break
            current, now, length, halvings = taken
            history.append(AscentStep(iteration, now.uncertainty, now.energy - start_energy,
                                      now.log_probability, length, halvings))
        current.arrays["adversarial_uncertainty"] = now.atomic_uncertainty
        return AdversarialSample(current, history, reason, start_energy,
                                 self.uncertainty.unit, info=self._record(history, reason))

    def _step(self, current: Atoms, now: Evaluation, start_energy: float,
              log_partition: float) -> tuple[Atoms, Evaluation, float, int] | None:
        """One step along the gradient, its largest atomic displacement `step` A, halved until
        it keeps the energy within the cap and does not lower p U: (structure, its evaluation,
        displacement in A, halvings), or None when MAX_HALVINGS halvings did not do."""
        direction = now.gradient / np.linalg.norm(now.gradient, axis=1).max()
        length = self.step
        for halvings in range(MAX_HALVINGS + 1):
            trial = current.copy()
            trial.positions += length * direction
            # the full step is usually taken: evaluate it with its gradient at once
            then = self.evaluate(trial, log_partition, gradient=halvings == 0)
            if (then.energy - start_energy <= self.energy_cap
                    and then.log_objective >= now.log_objective):
                if then.gradient is None:
                    then = self.evaluate(trial, log_partition)
                return trial, then, length, halvings
            length /= 2
        return None

    def _energy(self, atoms: Atoms) -> float:
        """Predicted energy (eV) of `atoms`: the committee mean or the single model's."""
        return float(self.estimator.predict(atoms).energy)

    def _record(self, history: list[AscentStep], reason: str) -> dict:
        """What a queued box records of the ascent that made it."""
        first, last = history[0], history[-1]
        return {"sampling": "adversarial", "adversarial_uncertainty": self.uncertainty.name,
                "adversarial_unit": self.uncertainty.unit, "adversarial_kT": self.kT,
                "adversarial_step": self.step, "adversarial_energy_cap": self.energy_cap,
                "adversarial_iterations": last.iteration,
                "adversarial_uncertainty_start": first.uncertainty,
                "adversarial_uncertainty_end": last.uncertainty,
                "adversarial_energy_above_start": last.energy_above_start,
                "adversarial_log_probability": last.log_probability,
                "adversarial_stop": reason}


def queue_sample(result: AdversarialSample, queue: str | Path, estimator, frame: int = 0,
                 sample: int = 0, extractor: Extractor | None = None, cutoff: float = 4.0,
                 run_id: str = "adversarial") -> str | None:
    """Write the adversarial structure to the candidate queue: whole, or (with `extractor`) the
    extractor's box around the atom of largest local U (its mean over neighbours within `cutoff`
    A). Named by run id, start frame, centre atom and sample; returns the name, or None when
    the queue already holds it (a rerun with the same settings)."""
    atoms = result.atoms
    local = aggregate(atoms, result.atomic_uncertainty, checked_cutoff(cutoff))
    centre = int(np.argmax(local))
    info = {**result.info, "centre_local_uncertainty": float(local[centre])}
    if extractor is not None:
        extractor.use_estimator(estimator)
        return extractor.extract_at(atoms, centre, step=frame, sample=sample, info=info)
    queue = CandidateQueue(queue)
    name = box_name(run_id, frame, centre, sample)
    if queue.stage_of(name) is not None:
        return None
    box = whole_frame_box(atoms)
    files, digests = model_identity(estimator)
    box.info.update(run_id=run_id, source_step=frame, centre_index=centre, sample=sample, **info)
    if files:
        box.info.update(model_files=";".join(map(str, files)), model_sha256=";".join(digests))
    queue.write(box, name, "pending", "written")
    return name
