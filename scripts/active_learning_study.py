"""Active learning with local boxes against random boxes and whole frames (Heid et al. 2024,
Fig. 7, on what a 2-core machine affords), with the loop's default training recipe.

Members 0 and 1 of the bundled committee (bulk Cu only) run Langevin MD of a Cu(100) slab with an
adatom and a vacancy (examples/learn/cu_slab_start.extxyz, 96 atoms); EMT is the reference. For
each seed, the same number of generations is run with each selection strategy of `mdmonitor
learn`, at about the same number of reference atoms per generation (~190):
  uncertainty   6 cubes of 8 A around the most uncertain centres (border relaxed)
  host          2 host embeddings of the 3.5 A environment of the most uncertain centres
                (selection.box = "host", ~108 atoms each)
  random        6 cubes around random atoms of random frames of the same MD
  whole-frame   the 2 frames of highest local uncertainty, whole (96 atoms each)
Training: the loop's defaults (fine-tuning, forces-weighted loss, lr 0.01, 4 initial frames
replayed per label, validation on the held-out labels plus as many bulk frames; holdout 0.2, at
least one frame a generation), with 20 epochs instead of 40, a committee of 2 instead of 4 and
80 MD steps a generation, to fit 2 seeds x 4 strategies x 4 generations in 75 minutes on 2
cores.
The models are tested after every generation on one fixed set of EMT-labelled frames, by kind:
bulk (hot bulk Cu), surface (the clean slab), defect (the slab with adatom and vacancy) and
high-energy (that slab at 1400 K).

The goals, stated before running and kept:
  1. whole frames lower the surface and defect force MAE by at least 30 % by the last
     generation (the loop learns at all);
  2. the best box strategy reaches whole-frame's final surface and defect MAE with at least 3x
     fewer reference atoms;
  3. uncertainty boxes beat random boxes on the high-energy frames at equal reference atoms in
     at least 2 of every 3 points compared;
  4. the bulk MAE rises by at most 10 % for every strategy.

Writes OUT/table.md, OUT/study.json and OUT/active_learning_study.png (and the run directories).

    .venv/bin/python scripts/active_learning_study.py              # 2 seeds x 4 generations
    .venv/bin/python scripts/active_learning_study.py --quick      # 1 seed, 1 generation
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # this script's own process; the trainers too

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.md.velocitydistribution import thermalize_momenta  # noqa: E402

from mdmonitor.bundled_models import demo_models  # noqa: E402
from mdmonitor.demo import demo_slab  # noqa: E402
from mdmonitor.learn import ActiveLearning, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "examples" / "learn" / "cu_slab_start.extxyz"
# strategy -> the [selection] keys of its runs (about 190 reference atoms a generation each)
STRATEGIES = {
    "uncertainty": {"strategy": "uncertainty", "boxes": 6},
    "host": {"strategy": "uncertainty", "box": "host", "boxes": 2},
    "random": {"strategy": "random", "boxes": 6},
    "whole-frame": {"strategy": "whole-frame", "boxes": 2},
}
TEST_SEED = 1234  # the test set is the same for every seed of the study
SUBSETS = ("bulk", "surface", "defect", "high-energy")
GOAL_DROP = 0.30  # goal 1
GOAL_ATOM_RATIO = 3.0  # goal 2
GOAL_WINS = 2 / 3  # goal 3
GOAL_BULK_RISE = 0.10  # goal 4
MEMBERS = 2
EPOCHS = 20
# Before this study, with the recipe of the time (energy-weighted loss, the labels diluted among
# all bulk frames or a weighted 48-frame replay, bulk-only validation), every strategy made the
# models worse; scripts/learning_diagnosis.py measured why (README, "Why the labels did not move
# the models").


def emt_frames(atoms, temperature_K: float, count: int, config_type: str, rng) -> list:
    """`count` frames of EMT Langevin MD at temperature_K, 0.1 ps apart, labelled with EMT."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K, rng=rng)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature_K, friction=0.02 / units.fs,
                   fixcm=False, rng=rng)
    dyn.run(100)
    frames = []
    for _ in range(count):
        dyn.run(50)
        frame = atoms.copy()
        frame.calc = None
        frame.info = {"config_type": config_type, "REF_energy": atoms.get_potential_energy()}
        frame.arrays["REF_forces"] = atoms.get_forces()
        frames.append(frame)
    return frames


def test_set(path: Path) -> Path:
    """The fixed EMT test set, written once."""
    if path.is_file():
        return path
    rng = np.random.default_rng(TEST_SEED)
    start = ase.io.read(START)
    frames = (emt_frames(bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3), 800.0, 6, "bulk", rng)
              + emt_frames(demo_slab(), 700.0, 6, "surface", rng)
              + emt_frames(start, 700.0, 6, "defect", rng)
              + emt_frames(start, 1400.0, 6, "high-energy", rng))
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")
    return path


def write_config(path: Path, strategy: str, seed: int, generations: int, test: Path) -> Path:
    selection = "\n".join(f"{k} = {json.dumps(v)}" for k, v in STRATEGIES[strategy].items())
    committee = json.dumps(demo_models()["committee"][:MEMBERS])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""
[run]
directory = "run"
generations = {generations}
seed = {seed}
[models]
committee = {committee}
validation_set = "bundled"
[md]
start = "{START}"
steps = 80
temperature = 700.0
interval = 5
frame_interval = 10
threshold = 0.012
[selection]
{selection}
max_per_frame = 2
box_length = 8.0
core_radius = 3.5
[training]
epochs = {EPOCHS}
[test]
file = "{test}"
""")
    return path


def crossing(atoms, values, target) -> float | None:
    """Reference atoms at which a falling curve first reaches `target` (linear interpolation)."""
    for i in range(1, len(values)):
        if values[i] <= target:
            a0, a1, v0, v1 = atoms[i - 1], atoms[i], values[i - 1], values[i]
            return a1 if v1 == v0 else a0 + (a1 - a0) * (v0 - target) / (v0 - v1)
    return None


def mae(rows: list[dict], subsets: tuple[str, ...]) -> list[float]:
    return [float(np.mean([r[f"test_force_mae_{k}"] for k in subsets])) for r in rows]


def analyse(results: dict) -> dict:
    """The four goals per seed (see the module's docstring)."""
    verdicts = {}
    for seed, runs in results.items():
        atoms = {s: [r["atoms_labeled_total"] for r in runs[s]] for s in STRATEGIES}
        slab = {s: mae(runs[s], ("surface", "defect")) for s in STRATEGIES}
        drop = 1 - slab["whole-frame"][-1] / slab["whole-frame"][0]
        target = slab["whole-frame"][-1]
        boxes = [s for s in STRATEGIES if s != "whole-frame"]
        reached = {s: crossing(atoms[s], slab[s], target) for s in boxes}
        ratios = {s: (None if reached[s] in (None, 0) else atoms["whole-frame"][-1] / reached[s])
                  for s in boxes}
        best = max((r for r in ratios.values() if r is not None), default=None)
        high = {s: mae(runs[s], ("high-energy",)) for s in STRATEGIES}
        common = np.linspace(0, min(atoms["uncertainty"][-1], atoms["random"][-1]), 7)[1:]
        gap = (np.interp(common, atoms["random"], high["random"])
               - np.interp(common, atoms["uncertainty"], high["uncertainty"]))
        bulk_rise = {s: mae(runs[s], ("bulk",))[-1] / mae(runs[s], ("bulk",))[0] - 1
                     for s in STRATEGIES}
        verdicts[seed] = {
            "whole_frame_surface_defect_drop": drop, "goal_1": bool(drop >= GOAL_DROP),
            "whole_frame_final_atoms": atoms["whole-frame"][-1],
            "whole_frame_final_surface_defect_mae": target,
            "atoms_to_reach_it": reached, "atom_ratio": ratios,
            "goal_2": best is not None and best >= GOAL_ATOM_RATIO,
            "high_energy_gain_of_uncertainty_over_random": gap.tolist(),
            "goal_3": bool(np.mean(gap > 0) >= GOAL_WINS),
            "bulk_rise": bulk_rise,
            "goal_4": bool(all(r <= GOAL_BULK_RISE for r in bulk_rise.values()))}
    return verdicts


def table(results: dict) -> str:
    lines = ["| seed | strategy | generation | reference atoms | MD steps | boxes | "
             + " | ".join(f"MAE {k}" for k in ("all",) + SUBSETS) + " |",
             "|" + "---|" * (6 + len(SUBSETS))]
    for seed, runs in results.items():
        for strategy in STRATEGIES:
            for row in runs[strategy]:
                maes = [row["test_force_mae"]] + [row[f"test_force_mae_{k}"] for k in SUBSETS]
                lines.append(f"| {seed} | {strategy} | {row['generation']} | "
                             f"{row['atoms_labeled_total']} | {row.get('md_steps') or ''} | "
                             f"{row.get('boxes') if row.get('boxes') is not None else ''} | "
                             + " | ".join(f"{m * 1000:.1f}" for m in maes) + " |")
    return "\n".join(lines) + "\n\n(force MAE in meV/A over all Cartesian components)\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.6), layout="constrained")
    axes = figure.subplots(1, len(SUBSETS), sharex=True)
    colours = dict(zip(STRATEGIES, ("C3", "C1", "C0", "C2")))
    for ax, subset in zip(axes, SUBSETS):
        for strategy in STRATEGIES:
            for i, (seed, runs) in enumerate(results.items()):
                rows = runs[strategy]
                ax.plot([r["atoms_labeled_total"] for r in rows],
                        [1000 * r[f"test_force_mae_{subset}"] for r in rows], marker="o",
                        ms=3, color=colours[strategy], alpha=0.8, ls=("-", "--", ":")[i % 3],
                        label=f"{strategy}, seed {seed}")
        ax.set(title=subset, xlabel="reference atoms labeled")
    axes[0].set_ylabel("test force MAE (meV/A)")
    axes[0].legend(fontsize="small")
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "study-output" / "active-learning")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 generation")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.generations = args.seeds[:1], 1
    begin = time.perf_counter()
    test = test_set(args.out / "test.extxyz")
    results = {}
    for seed in args.seeds:
        results[seed] = {}
        for strategy in STRATEGIES:
            config = write_config(args.out / f"seed-{seed}" / strategy / "learn.toml", strategy,
                                  seed, args.generations, test)
            print(f"seed {seed}, {strategy}", flush=True)
            results[seed][strategy] = ActiveLearning(load_config(config), progress=False).run()
    verdicts = analyse(results)
    minutes = (time.perf_counter() - begin) / 60
    (args.out / "table.md").write_text(table(results))
    (args.out / "study.json").write_text(json.dumps(
        {"minutes": minutes, "results": results, "verdicts": verdicts}, indent=1, default=str))
    plot(results, args.out / "active_learning_study.png")
    print(table(results))
    for seed, verdict in verdicts.items():
        print(f"seed {seed}: {json.dumps(verdict)}")
    print(f"{minutes:.1f} min; wrote {args.out}/table.md, study.json, active_learning_study.png")


if __name__ == "__main__":
    main()
