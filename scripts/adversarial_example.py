"""Adversarial sampling on the demo slab (Tan et al. 2023, Sec. 2.4): U before and after, and
whether the structure it finds is one the model is really wrong about.

For each estimator (the bundled 4-member committee, model 0's LLPR and GMM) the 96-atom Cu(100)
demo slab is displaced by `mdmonitor adversarial`'s ascent (the same AdversarialSampler, same
settings as the command below). Printed per estimator: U at the start (after the 0.01 A start
noise) and at the end, steps taken and refused (halved), predicted energy above the start, p,
why it stopped, the seconds it took; then the model's real force error against EMT (mean
|F_model - F_EMT| per component, eV/A, the committee mean for the committee) on the start slab,
on the adversarial slab, and on a control: the start displaced in a random direction, scaled
so that its predicted energy rises exactly as much as the adversarial one's (same energy, hence
same p: only the direction differs).

    .venv/bin/python scripts/adversarial_example.py [committee llpr gmm] [--kT 0.05]
        [--energy-cap 1.0] [--iterations 20]

The command-line equivalent of one row:

    mdmonitor adversarial start.extxyz --committee $DATA/cu_committee_?.model -n 20 --kT 0.05 \\
        --step 0.02 --energy-cap 1.0 --queue adversarial-candidates
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from ase.calculators.emt import EMT

from mdmonitor import Committee, LastLayerLPR, LatentGMM, demo_models
from mdmonitor.demo import demo_slab
from mdmonitor.sampling.adversarial import AdversarialSampler


def force_error(estimator, atoms) -> float:
    """Mean |F_model - F_EMT| per component (eV/A)."""
    reference = atoms.copy()
    reference.calc = EMT()
    return float(np.abs(estimator.predict(atoms).forces - reference.get_forces()).mean())


def energy_matched(estimator, start, rise: float, rng) -> tuple:
    """The start displaced along a random direction by the scale (bisection, 1e-4 relative)
    at which its predicted energy is `rise` eV above the start's; (structure, rms in A)."""
    direction = rng.normal(size=start.positions.shape)
    direction /= np.sqrt((direction**2).sum(axis=1).mean())  # rms 1 A
    base = estimator.predict(start).energy

    def displaced(scale):
        moved = start.copy()
        moved.positions += scale * direction
        return moved

    low, high = 0.0, 0.05
    while estimator.predict(displaced(high)).energy - base < rise:
        low, high = high, 2 * high
    while high - low > 1e-4 * high:
        middle = 0.5 * (low + high)
        if estimator.predict(displaced(middle)).energy - base < rise:
            low = middle
        else:
            high = middle
    return displaced(high), high


def main(names, **settings) -> None:
    torch.set_num_threads(1)
    models = demo_models()
    build = {"committee": lambda: Committee.from_mace(models["committee"]),
             "llpr": lambda: LastLayerLPR.load(models["llpr"]),
             "gmm": lambda: LatentGMM.load(models["gmm"])}
    start = demo_slab()
    rng = np.random.default_rng(1)
    for name in names:
        estimator = build[name]()
        sampler = AdversarialSampler(estimator, step=0.02, noise=0.01, seed=0, **settings)
        began = time.perf_counter()
        result = sampler.sample(start)
        seconds = time.perf_counter() - began
        first, last = result.history[0], result.history[-1]
        shift = result.atoms.positions - start.positions
        rms = float(np.sqrt((shift**2).sum(axis=1).mean()))
        print(f"{name}: U {first.uncertainty:.4g} -> {last.uncertainty:.4g} {result.unit} "
              f"(x{last.uncertainty / first.uncertainty:.2f}) in {last.iteration} steps, "
              f"{sum(s.halvings for s in result.history)} halvings, rms displacement "
              f"{rms:.3f} A, energy {last.energy_above_start:+.3f} eV above the start, p "
              f"{np.exp(last.log_probability):.3g}, {seconds:.0f} s ({result.stop_reason})")
        errors = (f"  force error vs EMT (eV/A): start {force_error(estimator, start):.4f}, "
                  f"adversarial {force_error(estimator, result.atoms):.4f}")
        if last.energy_above_start > 0:
            control, scale = energy_matched(estimator, start, last.energy_above_start, rng)
            at_control = sampler.evaluate(control, 0.0, gradient=False)
            errors += (f", random direction at the same energy (rms {scale:.3f} A): U "
                       f"{at_control.uncertainty:.4g}, error "
                       f"{force_error(estimator, control):.4f}")
        print(errors)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["committee", "llpr", "gmm"])
    parser.add_argument("--kT", type=float, default=0.05, help="eV per atom (default 0.05)")
    parser.add_argument("--energy-cap", type=float, default=1.0, help="eV (default 1.0)")
    parser.add_argument("--iterations", type=int, default=20, help="(default 20)")
    args = parser.parse_args()
    main(args.names, kT=args.kT, energy_cap=args.energy_cap, iterations=args.iterations)
