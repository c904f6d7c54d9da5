"""Baseline of the Ag-Pd calibration case: how well each estimator ranks the local force errors.

Loads the committee, member 0's LLPR and latent GMM of ``examples/alloy/data`` (built by
``scripts/train_alloy_models.py``), evaluates each on ``alloy_test.extxyz`` with
``mdmonitor.quality.evaluation.evaluate`` and prints the Spearman correlation between the 4 A
local uncertainty and the 4 A local force error (mean |F - F_EMT| per component, eV/A), pooled
over all frames and per ``config_type``.

    .venv/bin/python examples/alloy/evaluate_baseline.py
"""

from pathlib import Path

import numpy as np

from mdmonitor import Committee, LastLayerLPR, LatentGMM
from mdmonitor.quality.evaluation import evaluate
from mdmonitor.quality.metrics import spearman

DATA = Path(__file__).parent / "data"
CUTOFF = 4.0  # A


def estimators() -> dict:
    """The three estimators of the case, as a user loads them."""
    members = [DATA / f"agpd_committee_{k}.model" for k in range(3)]
    return {
        "committee": Committee.from_mace(members),
        "LLPR": LastLayerLPR.load(DATA / "agpd_llpr.npz", members[0]),
        "GMM": LatentGMM.load(DATA / "agpd_gmm.npz", members[0]),
    }


def local_spearman(evaluation) -> dict[str, float]:
    """Spearman of the CUTOFF-local uncertainty and error: pooled and per config_type."""
    level = evaluation.level(CUTOFF)
    condition = np.concatenate([np.full(len(p.atoms), p.atoms.info["config_type"])
                                for p in evaluation.predictions])
    result = {"pooled": level.spearman}
    for name in dict.fromkeys(condition):  # in file order
        mine = condition == name
        result[name] = spearman(level.uncertainty[mine], level.error[mine])
    return result


def main() -> None:
    table = {name: local_spearman(evaluate(estimator, DATA / "alloy_test.extxyz", cutoff=CUTOFF,
                                           progress=False))
             for name, estimator in estimators().items()}
    columns = list(next(iter(table.values())))
    print(f"Spearman(local uncertainty, local force error), {CUTOFF:g} A, alloy_test.extxyz")
    print(f"| estimator | {' | '.join(columns)} |")
    print(f"|---|{'---|' * len(columns)}")
    for name, row in table.items():
        print(f"| {name} | {' | '.join(f'{row[c]:.2f}' for c in columns)} |")


if __name__ == "__main__":
    main()
