"""Why a generation's labels do not move the models (issue "The loop must learn", part 1).

One member of the bundled bulk-trained committee is fine-tuned by `mdmonitor.learn.training`
(mace_run_train) on the bundled bulk training set plus NEW whole frames of the Cu(100) slab with
adatom and vacancy (EMT MD at 700 K, EMT labels), the case of `examples/learn/cu_slab.toml` with
whole-frame selection. Every epoch's weights are kept (--save_all_checkpoints) and tested on the
fixed test set of `scripts/active_learning_study.py` (6 EMT frames each of bulk, surface, defect,
high-energy), so that the effect of the weights and the effect of mace's checkpoint rule (the
epoch of lowest validation loss) are seen apart. Recipes (``--recipes``):

  today      valid = the bundled bulk validation set, lr 1e-3, the loop's recipe until now
  mixed      valid = held-out frames of the new kind + a slice of the bulk validation set
  many       fine-tuned on bulk + 34 slab frames, valid = 6 slab + 6 bulk frames
  ceiling    from scratch on bulk + 40 slab frames (what these tiny models can reach at all)

Writes OUT/diagnosis.json and prints a table per recipe: epoch, training and validation loss
(mace's log), the test force MAE per subset of that epoch's weights, and the epoch mace kept.

    .venv/bin/python scripts/learning_diagnosis.py --recipes today mixed
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mdmonitor.bundled_models import demo_models  # noqa: E402
from mdmonitor.common.trusted_pickles import trusted_pickle_loads  # noqa: E402
from mdmonitor.estimators.mace_model import MaceModel  # noqa: E402
from mdmonitor.learn.training import train_model, validation_by_epoch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from active_learning_study import START, emt_frames, test_set  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUBSETS = ("bulk", "surface", "defect", "high-energy")


def new_frames(count: int, seed: int) -> list:
    """`count` whole frames of the defect slab from EMT MD at 700 K (what whole-frame selection
    labels), config_type "new"."""
    return emt_frames(ase.io.read(START), 700.0, count, "new", np.random.default_rng(seed))


def settings(**changes) -> dict:
    base = {"mode": "finetune", "epochs": 5, "lr": None, "batch_size": 4,
            "energy_weight": 100.0, "forces_weight": 10.0, "stress_weight": 100.0,
            "extra_args": []}
    return {**base, **changes}


def per_epoch_maes(start: Path, checkpoints: Path, test: Path, scratch: Path) -> dict:
    """Test force MAE per subset (meV/A) of every epoch's checkpoint."""
    with trusted_pickle_loads():
        model = torch.load(start, map_location="cpu")
    result = {}
    for path in sorted(checkpoints.glob("*_epoch-*.pt"),
                       key=lambda p: int(p.stem.split("epoch-")[1])):
        epoch = int(path.stem.split("epoch-")[1])
        with trusted_pickle_loads():
            model.load_state_dict(torch.load(path, map_location="cpu")["model"])
        torch.save(model, scratch)
        result[epoch] = maes(scratch, test)
    return result


def maes(model_path: Path, test: Path) -> dict:
    """Force MAE (meV/A, over Cartesian components) of one model per config_type of `test`."""
    model, errors = MaceModel(model_path), {}
    for atoms in ase.io.read(test, index=":"):
        error = np.abs(model.predict(atoms).forces - atoms.arrays["REF_forces"])
        errors.setdefault(atoms.info["config_type"], []).append(error)
    return {k: round(1000 * float(np.mean(v)), 1) for k, v in errors.items()}


def run(name: str, out: Path, test: Path, train_frames: list, valid_frames: list | None,
        recipe: dict, start: Path) -> dict:
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    train_file, valid_file = work / "train.extxyz", work / "valid.extxyz"
    ase.io.write(train_file, train_frames, format="extxyz")
    if valid_frames is not None:
        ase.io.write(valid_file, valid_frames, format="extxyz")
    begin = time.perf_counter()
    output = work / "trained.model"  # (the last epoch: every epoch's checkpoint is saved)
    output.unlink(missing_ok=True)
    train_model(MaceModel(start), output, work / "training", recipe, seed=7,
                train_file=train_file, valid_file=valid_file if valid_frames else None,
                checkpoints=True)
    seconds = time.perf_counter() - begin
    log = work / "training" / "train.log"
    result = {"recipe": recipe, "train_frames": len(train_frames),
              "valid_frames": len(valid_frames or []), "seconds": round(seconds, 1),
              "valid_loss": {epoch: figures["loss"] for epoch, figures
                             in validation_by_epoch(log.read_text()).items()},
              "start": maes(start, test),
              "epochs": per_epoch_maes(start, work / "training" / "checkpoints", test,
                                       work / "epoch.model")}
    print(report(name, result), flush=True)
    return result


def report(name: str, result: dict) -> str:
    lines = [f"## {name}: {result['train_frames']} training frames, "
             f"{result['valid_frames'] or 'mace 10 %'} validation frames, "
             f"{result['seconds']} s",
             "| epoch | valid loss | " + " | ".join(SUBSETS) + " |", "|---" * 6 + "|"]
    rows = [("start", result["valid_loss"].get(-1), result["start"])]
    rows += [(e, result["valid_loss"].get(e), m) for e, m in result["epochs"].items()]
    trained = {e: loss for e, loss in result["valid_loss"].items() if e >= 0}
    best = min(trained, key=trained.get)
    lines[0] += f"; lowest validation loss (what mace keeps without all checkpoints): {best}"
    for epoch, loss, m in rows:
        lines.append(f"| {epoch} | {'' if loss is None else f'{loss:.5f}'} | "
                     + " | ".join(str(m.get(k, "")) for k in SUBSETS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["today", "mixed"])
    parser.add_argument("--new", type=int, default=2, help="new slab frames to train on")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--extra", nargs="*", default=[])
    parser.add_argument("--replay", type=int, default=None,
                        help="bulk training frames replayed (default: all)")
    parser.add_argument("--energy-weight", type=float, default=100.0)
    parser.add_argument("--forces-weight", type=float, default=10.0)
    parser.add_argument("--name", default="", help="suffix of the output folder")
    parser.add_argument("--out", type=Path, default=ROOT / "study-output" / "diagnosis")
    args = parser.parse_args()
    test = test_set(ROOT / "study-output" / "active-learning" / "test.extxyz")
    models = demo_models()
    bulk_train = ase.io.read(models["training_set"], index=":")
    bulk_valid = ase.io.read(models["validation_set"], index=":")
    start = Path(models["committee"][0])
    new = new_frames(args.new + 2, seed=99)
    labels, held = new[:args.new], new[args.new:]
    if args.replay is not None:
        chosen = np.random.default_rng(3).permutation(len(bulk_train))[:args.replay]
        bulk_train = [bulk_train[i] for i in chosen]
    recipe = settings(epochs=args.epochs, lr=args.lr, extra_args=args.extra,
                      energy_weight=args.energy_weight, forces_weight=args.forces_weight)
    results = {}
    for name in args.recipes:
        if name == "today":
            results[name] = run(name + args.name, args.out, test, bulk_train + labels,
                                bulk_valid, recipe,
                                start)
        elif name == "mixed":
            results[name] = run(name + args.name, args.out, test, bulk_train + labels,
                                held + bulk_valid[:len(held) * 2], recipe, start)
        elif name == "many":
            slab = new_frames(40, seed=5)
            results[name] = run(name + args.name, args.out, test, bulk_train + slab[:34],
                                slab[34:] + bulk_valid[:6], recipe, start)
        elif name == "ceiling":
            slab = new_frames(40, seed=5)
            results[name] = run(name + args.name, args.out, test, bulk_train + slab[:34],
                                slab[34:] + bulk_valid[:6],
                                settings(mode="scratch", epochs=args.epochs, lr=args.lr,
                                         extra_args=args.extra), start)
        else:
            parser.error(f"unknown recipe {name}")
    (args.out / "diagnosis.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
