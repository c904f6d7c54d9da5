"""Does PR-guided selection teach the model the triggering environments with fewer boxes?

Goal, stated before the first run: on a pool of embedded boxes cut from the demo MD (several
centres, 4 noisy samples per centre, `Extractor("embed", ...)`), the targets' LPR (harmonic mean
over the triggering centre atoms, in their MD frames) after k boxes added to the LLPR of model 0
is higher for PR-guided selection (`select_pending`'s choice, with the box centres as targets)
than for the top-k boxes by centre uncertainty and than for random boxes (mean of 50 draws), at
every k = 1..8; and PR-guided reaches the LPR that top-k by uncertainty reaches at k = 8 with at
most 4 boxes.

No labels are involved: the LPR after adding boxes is computed exactly from H + sum U_s U_s^T
(the boxes' Gauss-Newton terms). The force-MAE comparison in the loop is not part of this study.

    .venv/bin/python scripts/pr_selection_study.py [--out pr-selection-output] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mdmonitor import LastLayerLPR, MonitoredCalculator, demo_models
from mdmonitor.demo import demo_slab
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.extraction.pr_selection import (
    centre_atom,
    choose_by_rigidity,
    targets_rigidity,
)
from mdmonitor.md import run_md

K = 8
CORE_RADIUS = 3.0  # A: with 4 A (the model cutoff) every cube cut at the surface fails its
# periodic-image gate (the tightest cube around a surface environment is 6.8-7.4 A < 2 x 4 A)
RANDOM_DRAWS = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("pr-selection-output"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=0.045)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    llpr = LastLayerLPR.load(demo_models()["llpr"])

    # 1. the pool: the demo slab's MD at 600 K, boxes embedded around triggering centres
    queue_dir = args.out / "candidates"
    if queue_dir.exists():
        raise SystemExit(f"{queue_dir} exists: give a new --out")
    sources = {}
    extractor = Extractor("embed", queue=queue_dir, core_radius=CORE_RADIUS, n_samples=4,
                          max_per_frame=2, max_boxes=40, cooldown=50, run_id="demo", seed=0)
    calc = MonitoredCalculator(llpr, cutoff=4.0, threshold=args.threshold, interval=5,
                               extractor=extractor,
                               callbacks=[lambda t: sources.setdefault(t.step, t.atoms)])
    run_md(demo_slab(), calc, args.steps, 600.0, timestep_fs=2.0, seed=0, progress=False)
    extractor.close()
    queue = CandidateQueue(queue_dir)
    names = [p.name for p in queue.boxes("pending")]
    boxes = [queue.read(queue.path("pending", n)) for n in names]
    centres = sorted({(int(b.info["source_step"]), int(b.info["centre_index"])) for b in boxes})
    print(f"MD {args.steps} steps: {len(boxes)} pending boxes around {len(centres)} centres "
          f"({len(queue.boxes('failed'))} failed a gate), "
          f"{np.mean([len(b) for b in boxes]):.0f} atoms per box")

    # 2. targets: the centre atoms in their MD frames (measured), and in the boxes (as
    #    `mdmonitor select` takes them, with no MD frame at hand)
    measured = np.stack([llpr.atomic_features(sources[s])[c] for s, c in centres])
    first = {}
    for i, box in enumerate(boxes):
        first.setdefault((int(box.info["source_step"]), int(box.info["centre_index"])), i)
    in_boxes = np.stack([llpr.atomic_features(boxes[i])[centre_atom(boxes[i])]
                         for i in first.values()])
    factors = llpr.gauss_newton_factors(boxes)
    base = llpr.hessian + llpr.regularizer * np.eye(llpr.features.dim)

    def lpr_after(chosen, targets=measured) -> float:
        matrix = base + sum((factors[i] @ factors[i].T for i in chosen), np.zeros_like(base))
        inverse = np.einsum("td,dt->t", targets, np.linalg.solve(matrix, targets.T))
        return targets_rigidity(inverse)

    # 3. orders of the boxes
    guided = choose_by_rigidity(llpr, in_boxes, boxes, n=K).chosen
    oracle = choose_by_rigidity(llpr, measured, boxes, n=K).chosen
    uncertainty = [float(b.info["centre_local_uncertainty"]) for b in boxes]
    top = list(np.lexsort((np.arange(len(boxes)), -np.array(uncertainty)))[:K])
    per_centre = sorted(first.values(), key=lambda i: -uncertainty[i])[:K]
    rng = np.random.default_rng(0)
    draws = [rng.choice(len(boxes), size=K, replace=False) for _ in range(RANDOM_DRAWS)]

    rows = []
    for k in range(K + 1):
        random = [lpr_after(d[:k]) for d in draws]
        rows.append({
            "k": k, "pr_guided": lpr_after(guided[:k]), "pr_guided_measured_targets":
            lpr_after(oracle[:k]), "top_uncertainty": lpr_after(top[:k]),
            "top_uncertainty_one_per_centre": lpr_after(per_centre[:k]) if k <= len(per_centre)
            else None, "random_mean": float(np.mean(random)),
            "random_p10": float(np.percentile(random, 10)),
            "random_p90": float(np.percentile(random, 90)),
            "pr_guided_box_targets": lpr_after(guided[:k], in_boxes),
            "top_uncertainty_box_targets": lpr_after(top[:k], in_boxes)})
    print("targets' LPR (harmonic mean over the centre atoms in their MD frames) after k boxes")
    print(f"{'k':>2} {'PR-guided':>10} {'(MD targets)':>12} {'top-unc.':>9} {'1/centre':>9} "
          f"{'random':>8} {'[p10, p90]':>17}")
    for row in rows:
        per = row["top_uncertainty_one_per_centre"]
        print(f"{row['k']:2d} {row['pr_guided']:10.1f} {row['pr_guided_measured_targets']:12.1f} "
              f"{row['top_uncertainty']:9.1f} {'' if per is None else f'{per:9.1f}':>9} "
              f"{row['random_mean']:8.1f} [{row['random_p10']:7.1f}, {row['random_p90']:7.1f}]")
    reach = next((k for k, row in enumerate(rows) if row["pr_guided"] >= rows[K]
                  ["top_uncertainty"]), None)
    beats = all(row["pr_guided"] > max(row["top_uncertainty"], row["random_mean"])
                for row in rows[1:])
    print(f"PR-guided above top-k by uncertainty and random at every k = 1..{K}: {beats}")
    print(f"PR-guided reaches top-k's LPR at k = {K} ({rows[K]['top_uncertainty']:.1f}) with "
          f"{reach} boxes")
    print(f"boxes chosen by PR-guided: {[names[i] for i in guided]}")
    summary = {"steps": args.steps, "threshold": args.threshold, "boxes": len(boxes),
               "centres": len(centres), "rows": rows, "guided": [names[i] for i in guided],
               "top_uncertainty": [names[i] for i in top], "beats_at_every_k": beats,
               "boxes_to_reach_top_k8": reach,
               "seconds": round(time.perf_counter() - start, 1)}
    (args.out / "pr_selection.json").write_text(json.dumps(summary, indent=1))
    print(f"{summary['seconds']} s; wrote {args.out / 'pr_selection.json'}")


if __name__ == "__main__":
    main()
