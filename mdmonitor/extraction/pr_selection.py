"""PR-guided selection: which candidate boxes to label so the model learns the triggering atoms.

Chong et al., Faraday Discuss. 2024 (seed 000), Sec. 4.1: from a pool of candidate structures,
take the one whose addition to the training set raises the prediction rigidity of the targets
the most, add its term to the Gauss-Newton matrix H, and repeat. No label is needed: H's term
of a structure, U_s U_s^T = F_s F_s^T + lambda_f J_s J_s^T (App. A), uses only the model's
last-layer features and their position derivatives (`LastLayerLPR.gauss_newton_factors`).

Here the targets are atomic environments (the atoms that triggered), so their rigidity is the
LPR_t = 1 / (f_t^T (H + zeta^2 I)^-1 f_t), summarised as the harmonic mean
1 / mean_t (1 / LPR_t): the LPR whose uncertainty is the targets' mean variance, so that one
target resolved far beyond the others does not hide them.

Everything runs in the coordinates whitened by the Cholesky factor L of H + zeta^2 I (g = L^-1 f,
V = L^-1 U): a candidate's gain is a Woodbury update, f^T (H' + zeta^2 I)^-1 f = |g|^2 -
|C^-1 V^T g|^2 with C C^T = I + V^T V, and taking it multiplies L by S, S S^T = I + V V^T, so
every vector is whitened again by one triangular solve with S: no refit, no model evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..common.settings import positive_integer, positive_number
from .candidates import CandidateQueue, CorruptBox


@dataclass
class RigidityChoice:
    """The outcome of a PR-guided choice among candidates.

    chosen: candidate indices in the order taken; rigidity: the targets' LPR (harmonic mean)
    before any choice and after each; target_rigidity: LPR of every target after the last;
    reached_limit: whether the choice stopped because the targets' LPR passed the limit.
    """

    chosen: list[int]
    rigidity: list[float]
    target_rigidity: np.ndarray = field(repr=False)
    reached_limit: bool


def targets_rigidity(inverse: np.ndarray | torch.Tensor) -> float:
    """The targets' LPR from their 1/LPR values: 1 / mean(1/LPR_t) (harmonic mean)."""
    return float(1.0 / np.mean(np.asarray(inverse, dtype=float)))


def choose_by_rigidity(llpr, targets: np.ndarray, candidates: list, n: int,
                       limit: float | None = None, progress: bool = False) -> RigidityChoice:
    """Take up to `n` of `candidates` (Atoms, unlabeled) one at a time, each time the one that
    raises the LPR of `targets` (last-layer features, (T, D), e.g. `llpr.atomic_features(frame)
    [indices]`) the most, until `n` are taken or the targets' LPR passes `limit`.

    `llpr` (a LastLayerLPR) is not changed. A candidate that cannot raise it (all of its
    features already known) is never taken.
    """
    n = positive_integer("n", n)
    limit = positive_number("limit", limit, allow_none=True, meaning="LPR (dimensionless)")
    targets = np.atleast_2d(np.asarray(targets, dtype=float))
    if len(targets) == 0 or targets.shape[1] != llpr.features.dim:
        raise ValueError(f"targets must be last-layer features of shape (T >= 1, "
                         f"{llpr.features.dim}), got {targets.shape}")
    if not candidates:
        raise ValueError("no candidate structures to choose from")
    whitened = llpr.whitened(targets.T)
    pool = {i: llpr.whitened(u) for i, u in
            enumerate(llpr.gauss_newton_factors(candidates, progress=progress))}
    inverse = (whitened * whitened).sum(dim=0)
    chosen, rigidity = [], [targets_rigidity(inverse)]
    while len(chosen) < n and pool and not (limit is not None and rigidity[-1] >= limit):
        gains = {i: _inverse_after(whitened, inverse, v) for i, v in pool.items()}
        best = max(gains, key=lambda i: (targets_rigidity(gains[i]), -i))
        if targets_rigidity(gains[best]) <= rigidity[-1]:
            break  # nothing left that teaches the targets anything
        added = pool.pop(best)
        factor = torch.linalg.cholesky(torch.eye(len(added), dtype=added.dtype)
                                       + added @ added.T)
        whitened = torch.linalg.solve_triangular(factor, whitened, upper=False)
        pool = {i: torch.linalg.solve_triangular(factor, v, upper=False)
                for i, v in pool.items()}
        inverse = (whitened * whitened).sum(dim=0)
        chosen.append(best)
        rigidity.append(targets_rigidity(inverse))
    return RigidityChoice(chosen, rigidity, 1.0 / inverse.cpu().numpy(),
                          limit is not None and rigidity[-1] >= limit)


def _inverse_after(whitened: torch.Tensor, inverse: torch.Tensor,
                   added: torch.Tensor) -> torch.Tensor:
    """1/LPR of every target after adding U U^T to H, whitened: |g|^2 - |C^-1 V^T g|^2 with
    C C^T = I + V^T V (Woodbury)."""
    factor = torch.linalg.cholesky(torch.eye(added.shape[1], dtype=added.dtype)
                                   + added.T @ added)
    projected = torch.linalg.solve_triangular(factor, added.T @ whitened, upper=False)
    return (inverse - (projected * projected).sum(dim=0)).cpu().numpy()


@dataclass
class QueueSelection:
    """What `select_pending` did: `chosen` box names (left pending, in the order taken),
    `skipped` names (moved to skipped/), the targets' LPR before and after each choice, the
    number of target environments and whether the limit was reached."""

    chosen: list[str]
    skipped: list[str]
    rigidity: list[float]
    targets: int
    reached_limit: bool


def centre_atom(box) -> int:
    """The index in `box` of the atom it was cut around (atom 0 for cut boxes; the atom at
    `centre_index` for whole frames)."""
    centre = int(box.info.get("centre_index", 0))
    matches = np.flatnonzero((box.arrays["source_index"] == centre) & box.arrays["core_mask"])
    return int(matches[0]) if len(matches) else 0


def check_model(llpr, box, name: str) -> None:
    """Refuse an LLPR whose model is not one of the models that cut `box` (when it names them)."""
    recorded = str(box.info.get("model_sha256", "")).split(";")
    if recorded != [""] and llpr.model.sha256() not in recorded:
        raise ValueError(
            f"the LLPR is for model '{llpr.model.name}' (SHA-256 {llpr.model.sha256()[:12]}...), "
            f"but box '{name}' was cut by a run of other models ({box.info.get('model_files')}); "
            "give the LLPR of the run's model (member 0 of a committee: `mdmonitor fit-llpr "
            "MEMBER0.model TRAIN.extxyz`)")


def select_pending(queue, llpr, n: int, limit: float | None = None,
                   progress: bool = False) -> QueueSelection:
    """PR-guided selection among the pending boxes of `queue` (a CandidateQueue or its
    directory), before any reference calculation.

    The targets are the environments that triggered: the centre atom of each pending box, one
    per source environment (run, step, centre; its lowest-numbered sample), its features taken
    in that box. Up to `n` boxes are chosen (`choose_by_rigidity`) and stay pending; every other
    pending box moves, unchanged, to skipped/ with the reason in the manifest (nothing is
    deleted). An unreadable box goes to failed/ as the labeler would send it.
    """
    queue = queue if isinstance(queue, CandidateQueue) else CandidateQueue(queue)
    n = positive_integer("n", n)
    names, boxes = [], []
    for path in queue.boxes("pending"):
        try:
            box = queue.read(path)
        except CorruptBox as err:  # as the labeler would file it, bytes untouched
            queue.move_unchanged(path.name, "failed", "failed", detail=str(err))
            continue
        check_model(llpr, box, path.name)
        names.append(path.name)
        boxes.append(box)
    if not boxes:
        raise ValueError(f"queue '{queue.root}' has no pending boxes to select from")
    environments = {}
    for i, box in enumerate(boxes):
        key = (box.info.get("run_id"), box.info.get("source_step"), box.info.get("centre_index"))
        environments.setdefault(key, i)
    targets = np.stack([llpr.atomic_features(boxes[i])[centre_atom(boxes[i])]
                        for i in environments.values()])
    choice = choose_by_rigidity(llpr, targets, boxes, n, limit, progress)
    chosen = [names[i] for i in choice.chosen]
    for rank, i in enumerate(choice.chosen, start=1):
        queue.log(names[i], "selected", boxes[i],
                  detail=f"PR-guided choice {rank}: targets' LPR {choice.rigidity[rank - 1]:.6g} "
                         f"-> {choice.rigidity[rank]:.6g}")
    reason = (f"PR-guided selection kept {len(chosen)} of {len(boxes)} boxes "
              + (f"(targets' LPR {choice.rigidity[-1]:.6g} passed the limit {limit:g})"
                 if choice.reached_limit else f"(n = {n})"))
    skipped = []
    for i in sorted(set(range(len(boxes))) - set(choice.chosen)):
        queue.move_unchanged(names[i], "skipped", "skipped", boxes[i], detail=reason)
        skipped.append(names[i])
    return QueueSelection(chosen, skipped, choice.rigidity, len(targets), choice.reached_limit)
