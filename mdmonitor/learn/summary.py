"""run/summary.csv and run/summary.png: one row per generation of an active-learning run, and the
test-set figures of the models each generation trained."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..common.atomic_files import replaced_atomically, write_atomically
from ..monitor_log import read_log
from ..quality.calibration import predict_labeled
from ..quality.metrics import spearman

COLUMNS = ("generation", "md_steps", "md_stopped", "boxes", "labeled", "atoms_labeled",
           "atoms_labeled_total", "max_local_uncertainty", "mean_local_uncertainty",
           "seconds_md", "seconds_label", "seconds_train", "seconds_refit", "kept_epochs",
           "valid_force_rmse_start", "valid_force_rmse_kept", "test_force_mae",
           "test_spearman", "grown_test_frames", "grown_test_force_mae", "stopped_reason")


def test_metrics(estimator, test_file: Path, cutoff: float) -> dict:
    """Force MAE (eV/A, over all Cartesian components) of `estimator`'s models on the labelled
    `test_file`, overall and per config_type, and the Spearman correlation between the local
    uncertainty and the local force error within `cutoff` A (seed 002, Eqs. 9-10)."""
    predictions = predict_labeled(estimator, test_file, progress=False)
    errors = [np.abs(p.force_error).mean(axis=1) for p in predictions]
    groups: dict[str, list] = {}
    for prediction, error in zip(predictions, errors):
        groups.setdefault(str(prediction.atoms.info.get("config_type", "all")), []).append(error)
    local_error = np.concatenate([p.local(e, cutoff) for p, e in zip(predictions, errors)])
    local_uncertainty = np.concatenate([p.local(p.atomic_uncertainty, cutoff)
                                        for p in predictions])
    return {"force_mae": float(np.concatenate(errors).mean()),
            "force_mae_by_config_type": {k: float(np.concatenate(v).mean())
                                         for k, v in sorted(groups.items())},
            "spearman": float(spearman(local_uncertainty, local_error))}


def _monitor_figures(monitor_log: Path) -> tuple[float | None, float | None]:
    """Largest and mean local uncertainty of the monitored frames of a monitor.csv."""
    rows = read_log(monitor_log)
    peaks = [r["max_local_uncertainty"] for r in rows if r["max_local_uncertainty"] is not None]
    means = [r["mean_local_uncertainty"] for r in rows if r["mean_local_uncertainty"] is not None]
    return (max(peaks) if peaks else None), (float(np.mean(means)) if means else None)


def summary_rows(root: Path) -> list[dict]:
    """The rows of every finished generation under `root`, in order, after a "start" row (with
    the starting models' test figures when there is a test set)."""
    start = root / "start.json"
    test = json.loads(start.read_text()) if start.is_file() else {}
    rows, total = [{"generation": "start", "atoms_labeled_total": 0, **_test_columns(test)}], 0
    for directory in sorted(root.glob("generation-*")):
        state_file = directory / "state.json"
        if not state_file.is_file():
            continue
        state = json.loads(state_file.read_text())
        if state.get("stage") != "done":
            continue
        total += state.get("atoms_labeled", 0)
        peak, mean = _monitor_figures(directory / "monitor.csv")
        test, grown = state.get("test", {}), state.get("grown_test", {})
        rows.append({"grown_test_frames": grown.get("frames"),
                     "grown_test_force_mae": grown.get("force_mae"),"generation": int(directory.name.split("-")[1]),
                     "atoms_labeled_total": total, "max_local_uncertainty": peak,
                     "mean_local_uncertainty": mean, **_test_columns(test),
                     **_training_columns(state.get("training", [])),
                     **{k: state.get(k) for k in COLUMNS if k in state}})
    return rows


def _training_columns(records: list[dict]) -> dict:
    """The epoch each model kept (space-separated) and the members' mean validation force RMSE
    (eV/A) before training and at the kept epoch: did the generation learn anything?"""
    if not records:
        return {}

    def mean(key):
        values = [r[key] for r in records if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    return {"kept_epochs": " ".join(str(r["kept_epoch"]) for r in records),
            "valid_force_rmse_start": mean("valid_force_rmse_start"),
            "valid_force_rmse_kept": mean("valid_force_rmse_kept")}


def _test_columns(test: dict) -> dict:
    columns = {"test_force_mae": test.get("force_mae"), "test_spearman": test.get("spearman")}
    columns.update({f"test_force_mae_{k}": v
                    for k, v in test.get("force_mae_by_config_type", {}).items()})
    return columns


def write_summary(root: Path, config) -> list[dict]:
    """Write root/summary.csv (atomically) and root/summary.png; return the rows."""
    rows = summary_rows(root)
    columns = list(COLUMNS) + sorted({k for r in rows for k in r if k not in COLUMNS})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    write_atomically(root / "summary.csv", text.getvalue())
    if rows:
        _plot(rows, root / "summary.png", config["selection"]["strategy"])
    return rows


def _plot(rows: list[dict], path: Path, strategy: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), layout="constrained")
    by_generation, by_atoms, uncertainty = figure.subplots(1, 3)
    tested = [r for r in rows if r.get("test_force_mae") is not None]
    retrainings = [0 if r["generation"] == "start" else r["generation"] + 1 for r in tested]
    atoms = [r["atoms_labeled_total"] for r in tested]
    for key in sorted({k for r in tested for k in r if k.startswith("test_force_mae")}):
        values = [r.get(key, np.nan) for r in tested]
        label = key.replace("test_force_mae_", "").replace("test_force_mae", "all")
        by_generation.plot(retrainings, values, marker="o", label=label)
        by_atoms.plot(atoms, values, marker="o", label=label)
    if not tested:
        for axes in (by_generation, by_atoms):
            axes.text(0.5, 0.5, "no [test] file in the config:\nno test force MAE to draw",
                      ha="center", va="center", transform=axes.transAxes)
    by_generation.set(xlabel="retrainings (0: the starting models)",
                      ylabel="test force MAE (eV/A)", title=f"selection: {strategy}")
    by_atoms.set(xlabel="reference atoms labeled (total)", ylabel="test force MAE (eV/A)")
    ran = [r for r in rows if r["generation"] != "start"]
    generations = [r["generation"] for r in ran]
    for key, label in (("max_local_uncertainty", "max"), ("mean_local_uncertainty", "mean")):
        uncertainty.plot(generations, [np.nan if r[key] is None else r[key] for r in ran],
                         marker="o", label=label)
    uncertainty.set(xlabel="generation (its MD)", ylabel="local uncertainty during the MD")
    for axes in (by_generation, by_atoms, uncertainty):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    with replaced_atomically(path) as temporary:
        figure.savefig(temporary, dpi=110)
