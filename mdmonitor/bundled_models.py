"""The tiny bundled Cu models (trained on EMT bulk data by scripts/train_demo_models.py)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"


def demo_models() -> dict:
    """{"committee": [4 MACE model paths], "llpr": LLPR file path, "training_set": extxyz path}."""
    paths = {"committee": [str(p) for p in sorted(DATA.glob("cu_committee_*.model"))],
             "llpr": str(DATA / "cu_llpr.npz"), "training_set": str(DATA / "cu_train.extxyz")}
    missing = [p for p in [*paths["committee"], paths["llpr"], paths["training_set"]]
               if not Path(p).is_file()]
    if len(paths["committee"]) < 2 or missing:
        what = ", ".join(missing) or "no committee"
        raise FileNotFoundError(f"bundled demo models are missing from {DATA} ({what}); "
                                "reinstall mdmonitor or run scripts/train_demo_models.py")
    return paths
