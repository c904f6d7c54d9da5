"""Build the fixed Ag-Pd test case for calibration studies on a two-element model.

Like ``train_demo_models.py`` (whose functions it reuses), but for random fcc Ag-Pd alloys,
both elements in ASE's EMT:

1. a reproducible bulk-only EMT data set: random fcc alloys with an Ag fraction of 0.2-0.8,
   32- and 108-atom cubic supercells at the Vegard's-law lattice constant of their composition
   (thermal Langevin MD snapshots at 300-800 K, Gaussian rattles, strained cells), written as
   ``agpd_train.extxyz`` and the held-out ``agpd_valid.extxyz`` (labels ``REF_energy`` (eV),
   ``REF_forces`` (eV/A), ``REF_stress`` (Voigt, eV/A^3));
2. test frames outside that domain, EMT-labelled, ``atoms.info["config_type"]`` naming the
   condition (``TEST_CONDITIONS``), in ``alloy_test.extxyz``;
3. three tiny float64 ScaleShiftMACE members with ZBL repulsion, trained with
   ``mace_run_train`` with the Cu models' hyper-parameters, each with its own seed and random
   80% subset (``agpd_committee_{0,1,2}.model``);
4. member 0's last-layer LPR on the whole training set and its latent GMM (one mixture per
   element) on its own training atoms (``agpd_llpr.npz``, ``agpd_gmm.npz``). No LTAU.

Example::

    nice -n 10 .venv/bin/python scripts/train_alloy_models.py --out examples/alloy/data --jobs 2
"""

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from train_demo_models import (  # sets OMP_NUM_THREADS=1 before torch is imported
    labelled,
    md_snapshots,
    print_validation_rmse,
    rattled,
    split_train_valid,
    strained,
    train_committee,
)

from mdmonitor import LastLayerLPR, LatentGMM

LATTICE_CONSTANT = {"Ag": 4.06, "Pd": 3.88}  # A; EMT's own fcc minima (4.064, 3.879 A)
N_MEMBERS = 3
NAME = "agpd_committee"

# bulk training data: MD at each of these Ag fractions; rattled and strained cells at random ones
MD_AG_FRACTIONS = np.linspace(0.2, 0.8, 7)
MD_COUNTS = {2: 12, 3: 3}  # per composition: supercell repeats -> snapshots (over 3 temperatures)
RANDOM_AG_FRACTION = (0.2, 0.8)
RATTLE_COUNTS = {2: 45, 3: 3}
STRAIN_COUNTS = {2: 45, 3: 3}

# test frames: Langevin EMT MD, THERMALISE steps then one frame every FRAME_SPACING steps
TIME_STEP = 5.0 * units.fs
FRICTION = 0.02 / units.fs
THERMALISE = 100  # 0.5 ps
FRAME_SPACING = 40  # 0.2 ps between frames
FRAMES_PER_CONDITION = 25
DEFECT_RUNS = 5
VACUUM = 8.0  # A each side of the slabs


def ag_fraction_lattice(ag_fraction: float) -> float:
    """Vegard's-law fcc lattice constant (A) of Ag(x)Pd(1-x)."""
    return ag_fraction * LATTICE_CONSTANT["Ag"] + (1.0 - ag_fraction) * LATTICE_CONSTANT["Pd"]


def randomly_alloyed(atoms: Atoms, ag_fraction: float, rng: np.random.Generator) -> Atoms:
    """``atoms`` (all Pd) with ``round(ag_fraction * N)`` random sites turned into Ag."""
    n_ag = round(ag_fraction * len(atoms))
    atoms.symbols[rng.choice(len(atoms), size=n_ag, replace=False)] = "Ag"
    return atoms


def alloy_cell(repeats: int, ag_fraction: float, rng: np.random.Generator) -> Atoms:
    """Random fcc Ag-Pd cubic supercell, ``4 * repeats**3`` atoms, at its Vegard lattice."""
    cell = bulk("Pd", "fcc", a=ag_fraction_lattice(ag_fraction), cubic=True).repeat(repeats)
    return randomly_alloyed(cell, ag_fraction, rng)


def build_alloy_dataset(seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """Labelled bulk Ag-Pd structures, shuffled and split into (train, valid)."""
    rng = np.random.default_rng(seed)
    structures = []
    for ag_fraction in MD_AG_FRACTIONS:
        for repeats, count in MD_COUNTS.items():
            structures += md_snapshots(
                repeats, count, rng, cell=lambda r, x=ag_fraction: alloy_cell(r, x, rng)
            )

    def random_composition(repeats: int) -> Atoms:
        return alloy_cell(repeats, rng.uniform(*RANDOM_AG_FRACTION), rng)

    for maker, counts in ((rattled, RATTLE_COUNTS), (strained, STRAIN_COUNTS)):
        for repeats, count in counts.items():
            structures += maker(repeats, count, rng, cell=random_composition)
    return split_train_valid(structures, rng)


def hot_bulk(ag_fraction: float, rng: np.random.Generator) -> Atoms:
    """2x2x4 random alloy cubic supercell (64 atoms) at its Vegard lattice."""
    a = ag_fraction_lattice(ag_fraction)
    return randomly_alloyed(bulk("Pd", "fcc", a=a, cubic=True).repeat((2, 2, 4)), ag_fraction, rng)


def slab(surface: Callable, ag_fraction: float, rng: np.random.Generator) -> Atoms:
    """Random alloy slab, 3x3 in-plane, 7 layers, ``VACUUM`` A each side (63 atoms)."""
    atoms = surface("Pd", size=(3, 3, 7), a=ag_fraction_lattice(ag_fraction), vacuum=VACUUM)
    return randomly_alloyed(atoms, ag_fraction, rng)


def vacancy_and_interstitial(ag_fraction: float, rng: np.random.Generator) -> Atoms:
    """2x2x4 random alloy cell (64 sites) with the corner atom removed and a Pd atom at the
    octahedral site 6.6 A away (body centre of the third cubic cell along z): 64 atoms."""
    a = ag_fraction_lattice(ag_fraction)
    atoms = hot_bulk(ag_fraction, rng)
    del atoms[0]  # the atom at the origin
    atoms.append("Pd")
    atoms.positions[-1] = (0.5 * a, 0.5 * a, 2.5 * a)
    return atoms


def md_frames(atoms: Atoms, temperature: float, condition: str, count: int,
              rng: np.random.Generator) -> list[Atoms]:
    """``count`` EMT-labelled Langevin MD frames of ``atoms`` at ``temperature`` (K),
    0.2 ps apart after 0.5 ps of thermalisation."""
    atoms.calc = EMT()
    dyn = Langevin(atoms, TIME_STEP, temperature_K=temperature, friction=FRICTION,
                   fixcm=False, rng=rng)
    dyn.run(THERMALISE)
    frames = []
    for _ in range(count):
        dyn.run(FRAME_SPACING)
        frame = labelled(atoms, condition)
        if not all(frame.pbc):  # a slab's stress is not a bulk property
            del frame.info["REF_stress"]
        frames.append(frame)
    return frames


def build_test_frames(seed: int) -> list[Atoms]:
    """Frames of the five test conditions, each outside the bulk 300-800 K training domain.

    The defect frames come from ``DEFECT_RUNS`` runs of 1.5 ps, each from its own random cell:
    in one 5.5 ps run the interstitial and the vacancy recombined after 4.5 ps."""
    rng = np.random.default_rng(seed)
    conditions = {  # name: (starting cell, number of runs, temperature in K)
        "bulk_ag30_hot": (lambda: hot_bulk(0.3, rng), 1, 1000.0),
        "bulk_ag70_hot": (lambda: hot_bulk(0.7, rng), 1, 1000.0),
        "slab_100": (lambda: slab(fcc100, 0.5, rng), 1, 600.0),
        "slab_111": (lambda: slab(fcc111, 0.5, rng), 1, 600.0),
        "defects": (lambda: vacancy_and_interstitial(0.5, rng), DEFECT_RUNS, 600.0),
    }
    frames = []
    for condition, (start, runs, temperature) in conditions.items():
        for _ in range(runs):
            frames += md_frames(start(), temperature, condition,
                                FRAMES_PER_CONDITION // runs, rng)
    return frames


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("examples/alloy/data"),
                        help="where the models, estimators and data go (default: %(default)s)")
    parser.add_argument("--workdir", type=Path,
                        help="MACE logs, checkpoints and member subsets (default: a new "
                        "directory under the system temporary directory)")
    parser.add_argument("--epochs", type=int, default=25,
                        help="training epochs per member (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="members trained at the same time, one CPU thread each "
                        "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=2025,
                        help="seed for data, subsets and training; member k uses seed + k "
                        "(default: %(default)s)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mdmonitor-alloy-"))
    workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    train, valid = build_alloy_dataset(args.seed)
    test = build_test_frames(args.seed + 100)
    paths = {kind: args.out / f"{prefix}.extxyz" for kind, prefix in
             (("train", "agpd_train"), ("valid", "agpd_valid"), ("test", "alloy_test"))}
    for kind, frames in (("train", train), ("valid", valid), ("test", test)):
        for atoms in frames:  # the MD velocities would only make the files bigger
            atoms.arrays.pop("momenta", None)
        ase.io.write(paths[kind], frames, format="extxyz")
        print(f"EMT {kind}: {len(frames)} structures, {sum(map(len, frames))} atoms -> "
              f"{paths[kind]} ({paths[kind].stat().st_size / 1e6:.2f} MB)", flush=True)
    print(f"data built in {time.perf_counter() - start:.0f} s", flush=True)

    model_paths = train_committee(train, paths["valid"], args.out, workdir, args.epochs,
                                  args.seed, args.jobs, start, N_MEMBERS, NAME)
    print_validation_rmse(model_paths, valid)

    LastLayerLPR.fit(model_paths[0], paths["train"], forces=True).save(args.out / "agpd_llpr.npz")
    LatentGMM.fit(model_paths[0], workdir / "member_0" / "train.extxyz").save(
        args.out / "agpd_gmm.npz")
    print(f"\nLLPR (whole training set) and latent GMM (member 0's training atoms) of member 0 "
          f"-> {args.out / 'agpd_llpr.npz'}, {args.out / 'agpd_gmm.npz'}")
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
