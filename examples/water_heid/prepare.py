"""The low-data start of the Heid water study (seed 002, Methods B), labelled with xTB, and the
committee trained on it: everything `water_heid.toml` needs.

    .venv/bin/python examples/water_heid/prepare.py [--out examples/water_heid]
        [--frames 20] [--molecules 32] [--members 3] [--epochs 30] [--method GFN2-xTB]

Writes into --out:
- data/train.extxyz, data/valid.extxyz: `frames` high-energy structures split 80:20 (the paper's
  50 highest-energy structures of its liquid data set, split 80:20): random packings of
  `molecules` waters compressed to 1.05-1.25 g/cm3 and rattled by 0.04-0.10 A, far from the
  production liquid; labelled once (a rerun keeps them);
- data/start.extxyz: the production MD's start, `molecules` waters packed at 1.0 g/cm3;
- data/e0s.json: the method's isolated H and O energies (eV), the models' E0s;
- models/water_<seed>.model: `members` tiny MACE models trained from scratch on them
  (mace_run_train, two at a time), the committee of the first cycle.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per xTB process and trainer

import ase.io  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "water_xtb"))
from water import (  # noqa: E402
    isolated_atom_energies,
    train_water_model,
    water_box,
    xtb_labelled,
)

DENSITY = (1.05, 1.25)  # g/cm3, the start structures (compressed)
RATTLE = (0.04, 0.10)  # A, Gaussian displacement of every atom
MD_DENSITY = 1.0  # g/cm3, the production box


def label_start(data: Path, frames: int, molecules: int, method: str, workers: int,
                seed: int) -> dict:
    """data/: the labelled start structures, the production start and the E0s (labels that
    are there already are kept); returns the E0s."""
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(frames):
        atoms = water_box(molecules, rng.uniform(*DENSITY), rng)
        atoms.positions += rng.normal(scale=rng.uniform(*RATTLE), size=atoms.positions.shape)
        structures.append(atoms)
    ase.io.write(data / "start.extxyz", water_box(molecules, MD_DENSITY, rng), format="extxyz")
    if not (data / "train.extxyz").is_file():
        if workers == 1:  # (a spawned process would import its caller's modules first)
            labelled = [xtb_labelled(atoms, method)[0] for atoms in structures]
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                labelled = [a for a, _ in pool.map(partial(xtb_labelled, method=method),
                                                   structures)]
        for atoms in labelled:
            atoms.info["config_type"] = "start"
        n_valid = max(1, round(0.2 * frames))
        ase.io.write(data / "valid.extxyz", labelled[:n_valid], format="extxyz")
        ase.io.write(data / "train.extxyz", labelled[n_valid:], format="extxyz")
        (data / "e0s.json").write_text(json.dumps(
            {"method": method, "e0s": isolated_atom_energies(method)}))
    return {int(z): e for z, e in json.loads((data / "e0s.json").read_text())["e0s"].items()}


def prepare(out: Path, frames: int = 20, molecules: int = 32, members: int = 3,
            epochs: int = 30, method: str = "GFN2-xTB", workers: int = 2,
            seed: int = 0, label_workers: int | None = None) -> list[Path]:
    """Write the start data and train the first committee into `out`; the model files.
    `workers` processes label and train; `label_workers`, if given, label (1: in this
    process)."""
    data = out / "data"
    e0s = label_start(data, frames, molecules, method, label_workers or workers, seed)
    with ThreadPoolExecutor(workers) as pool:  # (each a mace_run_train process)
        return list(pool.map(lambda member: train_water_model(
            data / "train.extxyz", data / "valid.extxyz", out / "training" / f"model_{member}",
            out / "models", member, e0s, epochs, batch_size=4), range(members)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--molecules", type=int, default=32)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--method", default="GFN2-xTB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = prepare(args.out, args.frames, args.molecules, args.members, args.epochs,
                     args.method, args.workers, args.seed)
    print(f"wrote {args.out / 'data'} ({args.frames} structures labelled with {args.method}) "
          f"and the committee {', '.join(str(m) for m in models)}")


if __name__ == "__main__":
    main()
