"""The tiny bundled Cu models (trained on EMT bulk data by scripts/train_demo_models.py)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"


def demo_models() -> dict:
    """{"committee": [4 MACE model paths], "llpr", "ltau", "gmm": estimator files of model 0,
    "training_set", "validation_set": extxyz paths (the models' training and validation data)}."""
    paths = {"committee": [str(p) for p in sorted(DATA.glob("cu_committee_*.model"))],
             **{kind: str(DATA / f"cu_{kind}.npz") for kind in ("llpr", "ltau", "gmm")},
             "training_set": str(DATA / "cu_train.extxyz"),
             "validation_set": str(DATA / "cu_valid.extxyz")}
    missing = [p for key, p in paths.items() if key != "committee" and not Path(p).is_file()]
    missing += [p for p in paths["committee"] if not Path(p).is_file()]
    if len(paths["committee"]) < 2 or missing:
        what = ", ".join(missing) or "no committee"
        raise FileNotFoundError(f"bundled demo models are missing from {DATA} ({what}); "
                                "reinstall mdmonitor or run scripts/train_demo_models.py")
    return paths
