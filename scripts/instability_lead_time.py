"""How long before an MD run breaks does the monitor's uncertainty warn? (Chong et al. 2024,
App. C / Fig. 9: low LPR on the atoms in close contact before the energy blows up.)

The test case, fixed before running: 108 atoms of fcc Cu (3 x 3 x 3 cubic cells, a = 3.61 A,
the bulk domain the bundled models were trained on), Langevin NVT at 2500 K (far above melting:
out of that domain), 2 fs steps, friction 0.01 / fs, at most 400 steps, seeds 0-4. The bundled
models have a false minimum: pushing two atoms of bulk Cu together, their energy peaks at 1.7 A
and falls again to 1.3 A, where EMT (their reference) rises steeply, so hot atoms that cross
the peak collapse into a close contact. Two estimators drive and watch their own runs: the
committee of four (the mean forces; threshold 0.04 eV/A) and LLPR of model 0 (its forces;
threshold 0.05), the README's thresholds for the demo's hot slab. The monitor runs every step
(cutoff 4 A, default StabilityCriteria: close contact below 0.5 x the sum of covalent radii,
1.32 A for Cu, or 10 x the starting temperature) and stops the run at the first instability.

Lead time = instability step - first step whose largest local uncertainty exceeds the threshold.
Also: the lead of the last onset (instability step - first step of the uninterrupted stretch
above the threshold that ends at the instability; 0 when below it there), and, measured after
the first run showed the threshold crossed by every hot frame, without a goal: for how many
steps just before the instability the frame's most uncertain atom was one of the atoms that end
in close contact or their first neighbours (within 3 A), against the fraction of atoms that
are (chance).

The goal, stated before running: for each estimator, in at least 4 of the 5 seeds the largest
local uncertainty crosses the threshold >= 10 steps (20 fs) before the instability and stays
above it through the last 10 steps before it.

Writes OUT/steps.csv (every step of every run), OUT/summary.csv and the figure
docs/figures/instability_lead_time.png.

    .venv/bin/python scripts/instability_lead_time.py               # 5 seeds, both estimators
    .venv/bin/python scripts/instability_lead_time.py --seeds 1 --steps 100   # a quick look
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.md.velocitydistribution import thermalize_momenta  # noqa: E402
from ase.neighborlist import neighbor_list  # noqa: E402

from mdmonitor import Committee, LastLayerLPR, MonitoredCalculator, demo_models  # noqa: E402
from mdmonitor.monitor_log import read_log  # noqa: E402
from mdmonitor.stability import Instability  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIGURE = ROOT / "docs" / "figures" / "instability_lead_time.png"
TEMPERATURE, TIMESTEP_FS, FRICTION, CUTOFF = 2500.0, 2.0, 0.01, 4.0
THRESHOLDS = {"committee": 0.04, "llpr": 0.05}  # eV/A for the committee; LLPR in its own unit
WARNING_STEPS = 10
SHELL = 3.0  # A: first neighbour shell of Cu (2.55 A; the second is at 3.61 A)


def estimator(kind: str):
    models = demo_models()
    return Committee.from_mace(models["committee"]) if kind == "committee" else \
        LastLayerLPR.load(models["llpr"])


def run(kind: str, uq, seed: int, steps: int, out: Path) -> dict:
    """One monitored Langevin run until its first instability; per-step rows and a summary."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, TEMPERATURE, rng=rng)
    log = out / f"{kind}_seed{seed}.csv"
    log.unlink(missing_ok=True)
    calc = MonitoredCalculator(uq, cutoff=CUTOFF, threshold=THRESHOLDS[kind], log=log,
                               timestep=TIMESTEP_FS * units.fs, stop_on_instability=True)
    atoms.calc = calc
    dyn = Langevin(atoms, TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE,
                   friction=FRICTION / units.fs, fixcm=False, rng=rng)
    frames = []  # every step's atoms (with momenta) and local uncertainty (N,)
    # ASE calls the observer after each step, whose force call is the step's (the n-th)
    dyn.attach(lambda: frames.append((atoms.copy(), calc.results["local_uncertainty"].copy())))
    started, instability = time.perf_counter(), None
    try:
        dyn.run(steps)
    except Instability as caught:  # the observer is not called for the unstable frame
        instability = caught
        frames.append((caught.atoms, calc.results["local_uncertainty"].copy()))
    seconds = time.perf_counter() - started
    rows = read_log(log)
    steps_table = [{"estimator": kind, "seed": seed, "step": int(row["step"]),
                    "max_local_uncertainty": row["max_local_uncertainty"],
                    "shortest_distance": float(neighbor_list("d", frame, 3.0).min()),
                    "temperature": frame.get_temperature(), "instability": row["instability"]}
                   for row, (frame, _) in zip(rows, frames)]
    summary = {"estimator": kind, "seed": seed, "threshold": THRESHOLDS[kind],
               "instability_step": instability and instability.step,
               "codes": "+".join(instability.codes) if instability else "", **lead_times(
                   np.array([r["max_local_uncertainty"] for r in rows]), THRESHOLDS[kind],
                   instability), **localisation(frames, instability),
               "seconds": round(seconds, 1)}
    return {"steps": steps_table, "summary": summary}


def lead_times(largest: np.ndarray, threshold: float, instability) -> dict:
    """first_above (step), lead_steps (instability step - first_above), last_onset_lead (steps
    of the stretch above the threshold that ends at the instability), above_last_10."""
    above = np.flatnonzero(largest > threshold)
    found = {"first_above": int(above[0]) if len(above) else None, "lead_steps": None,
             "last_onset_lead": None, "above_last_10": None}
    if instability is None:
        return found
    step = instability.step
    if found["first_above"] is not None and found["first_above"] <= step:
        found["lead_steps"] = step - found["first_above"]
    below = np.flatnonzero(largest[:step + 1] <= threshold)
    found["last_onset_lead"] = max(step - (int(below[-1]) + 1 if len(below) else 0), 0)
    found["above_last_10"] = found["last_onset_lead"] >= WARNING_STEPS
    return found


def localisation(frames: list, instability) -> dict:
    """Does the uncertainty point at the collision before it happens? localised_lead: steps
    just before the instability, in a row, whose most uncertain atom (largest local value) is
    one of the atoms that end in close contact or within SHELL A of one; chance: the fraction
    of atoms that close to them one step before (what a random atom would score)."""
    if instability is None or not len(instability.indices):
        return {"localised_lead": None, "chance": None}
    contact, near = instability.indices, []
    for frame, local in frames[:instability.step]:
        near.append(frame.get_distances(int(np.argmax(local)), contact, mic=True).min() < SHELL)
    streak = next((k for k, hit in enumerate(reversed(near)) if not hit), len(near))
    frame = frames[instability.step - 1][0]
    close = [frame.get_distances(i, contact, mic=True).min() < SHELL for i in range(len(frame))]
    return {"localised_lead": streak, "chance": round(float(np.mean(close)), 3)}


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(results: list[dict], path: Path) -> None:
    kinds = list(THRESHOLDS)
    fig, axes = plt.subplots(3, len(kinds), figsize=(11, 9), sharex=True)
    colours = plt.cm.tab10.colors
    for column, kind in enumerate(kinds):
        for result in (r for r in results if r["summary"]["estimator"] == kind):
            seed = result["summary"]["seed"]
            colour = colours[seed % len(colours)]
            steps = np.array([r["step"] for r in result["steps"]])
            for row, key in enumerate(("max_local_uncertainty", "shortest_distance",
                                       "temperature")):
                values = np.array([r[key] for r in result["steps"]], dtype=float)
                axes[row, column].plot(steps, values, color=colour, lw=1,
                                       label=f"seed {seed}" if row == 0 else None)
            event = result["summary"]["instability_step"]
            if event is not None:
                for row in range(3):
                    axes[row, column].axvline(event, color=colour, ls=":", lw=1)
                axes[0, column].plot(event, result["steps"][-1]["max_local_uncertainty"], "x",
                                     color=colour, ms=9, mew=2)
        axes[0, column].axhline(THRESHOLDS[kind], color="k", ls="--", lw=1,
                                label=f"threshold {THRESHOLDS[kind]}")
        axes[0, column].set_yscale("log")
        axes[0, column].set_ylim(bottom=1e-3)  # the perfect lattice of step 0 is ~0
        axes[0, column].set_title(f"{kind}: 108-atom Cu, Langevin {TEMPERATURE:.0f} K, "
                                  f"{TIMESTEP_FS:g} fs", fontsize=10)
        axes[0, column].legend(fontsize=7, ncol=2)
        axes[1, column].axhline(1.32, color="k", ls="--", lw=1,
                                label="close contact: 0.5 x (r_cov + r_cov) = 1.32 A")
        axes[1, column].legend(fontsize=7)
        axes[2, column].set_xlabel("MD step (x = instability flag, dotted line)")
    axes[0, 0].set_ylabel("max local uncertainty\n(committee eV/A; LLPR its unit)")
    axes[1, 0].set_ylabel("shortest distance (A)")
    axes[2, 0].set_ylabel("temperature (K)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--steps", type=int, default=400, help="most MD steps per run")
    parser.add_argument("--out", type=Path, default=Path("instability_study"),
                        help="directory of the monitor logs and CSV tables")
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for kind in THRESHOLDS:
        uq = estimator(kind)
        for seed in range(args.seeds):
            result = run(kind, uq, seed, args.steps, args.out)
            print(result["summary"], flush=True)
            results.append(result)
    write_csv(args.out / "steps.csv", [row for r in results for row in r["steps"]])
    write_csv(args.out / "summary.csv", [r["summary"] for r in results])
    plot(results, args.figure)
    for kind in THRESHOLDS:
        mine = [r["summary"] for r in results if r["summary"]["estimator"] == kind]
        hits = sum(1 for s in mine if (s["lead_steps"] or 0) >= WARNING_STEPS
                   and s["above_last_10"])
        print(f"{kind}: goal met in {hits} of {len(mine)} seeds")


if __name__ == "__main__":
    main()
