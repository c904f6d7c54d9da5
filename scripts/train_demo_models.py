"""Build the tiny Cu MACE committee that ships in ``mdmonitor/data``.

The demo models are deliberately narrow: they are trained on *bulk* fcc Cu only
(thermal MD snapshots, Gaussian rattles and strained cells, labelled with ASE's
EMT calculator), with no surfaces and no vacancies in the data. A surface or a
vacancy is therefore outside the training domain, and the committee members
disagree there. That disagreement is what mdmonitor's demos visualise.

The script

1. generates a reproducible EMT data set (32- and 108-atom fcc supercells) and
   writes ``cu_train.extxyz`` and the held-out ``cu_valid.extxyz`` to ``--out``,
   with labels under ``REF_energy`` (eV), ``REF_forces`` (eV/A) and
   ``REF_stress`` (Voigt, eV/A^3);
2. trains four tiny float64 ScaleShiftMACE models with ZBL pair repulsion with
   mace-torch's own ``mace_run_train``, each with its own seed and its own
   random 80% subset of the training set, validated on the shared held-out set;
3. copies the final models to ``--out`` as ``cu_committee_{0..3}.model``
   (logs and a checkpoint per epoch stay in ``--workdir``);
4. fits member 0's single-model estimators: the last-layer LPR on the whole training set, and
   on member 0's own training atoms LTAU (from its force errors at every epoch, evaluated on the
   checkpoints) and the latent Gaussian mixture (``cu_llpr.npz``, ``cu_ltau.npz``,
   ``cu_gmm.npz``);
5. prints each model's validation RMSEs and the committee force spread on two
   out-of-domain probes (a 6-layer Cu(100) slab and a bulk cell with a
   vacancy) next to a pristine bulk cell, at two rattle amplitudes.

Nothing is downloaded: no foundation model, no Weights & Biases.

Example::

    .venv/bin/python scripts/train_demo_models.py --out mdmonitor/data
    .venv/bin/python scripts/train_demo_models.py --quick --out /tmp/cu-quick
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# One thread per process: parallelism comes from training members concurrently
# (--jobs). Multithreaded torch slows down many-fold when a core is busy elsewhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
from ase import Atoms, units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.geometry import get_distances  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402

from mdmonitor.common import mace_imports  # noqa: E402, F401  (e3nn first, its constants trusted)
from mace.calculators import MACECalculator  # noqa: E402

from mdmonitor import LTAU, Committee, LastLayerLPR, LatentGMM  # noqa: E402
from mdmonitor.common.trusted_pickles import FLAG, trusted_pickle_loads  # noqa: E402
from mdmonitor.demo import demo_slab  # noqa: E402
from mdmonitor.estimators.ltau import log_training_errors  # noqa: E402

LATTICE_CONSTANT = 3.6  # A; EMT's own fcc Cu minimum is 3.59 A
N_MEMBERS = 4
SUBSET_FRACTION = 0.8
VALID_FRACTION = 0.15
# the first 5 epochs' mean training force errors (0.27-0.09 eV/A) are 2.5-7x the final one
# (0.037 eV/A): a barely trained model; LTAU's PDFs leave them out
LTAU_FIRST_EPOCH = 5
PROBE_RATTLES = (0.05, 0.10)  # A, Gaussian displacements of the probe structures

# config_type -> (supercell repeats of the cubic 4-atom cell, number of structures)
COMPOSITION = {
    "md": {2: 60, 3: 12},
    "rattle": {2: 50, 3: 6},
    "strain": {2: 50, 3: 6},
}
MD_TEMPERATURES_K = (300.0, 550.0, 800.0)

MACE_HYPERPARAMETERS = {
    "model": "MACE",
    "r_max": "4.0",
    "num_channels": "16",
    "max_L": "1",
    "max_ell": "2",
    "correlation": "2",
    "num_interactions": "2",
    "MLP_irreps": "16x0e",
    "num_radial_basis": "8",
    "radial_MLP": "[16, 16]",
    "E0s": "average",
    "loss": "stress",
    "energy_weight": "100.0",
    "forces_weight": "10.0",
    "stress_weight": "100.0",
    "batch_size": "4",
    "valid_batch_size": "16",
    "lr": "0.01",
    "ema_decay": "0.99",
}


def fcc_cell(repeats: int) -> Atoms:
    """Cubic fcc Cu supercell with ``4 * repeats**3`` atoms."""
    return bulk("Cu", "fcc", a=LATTICE_CONSTANT, cubic=True).repeat(repeats)


def labelled(atoms: Atoms, config_type: str) -> Atoms:
    """Copy of ``atoms`` with EMT labels stored under MACE's ``REF_*`` keys."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=True)
    atoms.calc = None
    atoms.info = {"config_type": config_type, "REF_energy": energy, "REF_stress": stress}
    atoms.arrays["REF_forces"] = forces
    return atoms


def md_snapshots(
    repeats: int,
    count: int,
    rng: np.random.Generator,
    cell: Callable[[int], Atoms] = fcc_cell,
) -> list[Atoms]:
    """Langevin EMT MD snapshots of ``cell(repeats)``, split evenly over ``MD_TEMPERATURES_K``."""
    snapshots = []
    per_temperature = np.array_split(np.arange(count), len(MD_TEMPERATURES_K))
    for temperature, indices in zip(MD_TEMPERATURES_K, per_temperature):
        atoms = cell(repeats)
        atoms.calc = EMT()
        dyn = Langevin(
            atoms,
            5.0 * units.fs,
            temperature_K=temperature,
            friction=0.02 / units.fs,
            fixcm=False,
            rng=rng,
        )
        dyn.run(60)  # 0.3 ps = 6 friction times to thermalise from rest
        for _ in indices:
            dyn.run(20)  # 0.1 ps between snapshots
            snapshots.append(labelled(atoms, "md"))
    return snapshots


def rattled(
    repeats: int,
    count: int,
    rng: np.random.Generator,
    cell: Callable[[int], Atoms] = fcc_cell,
) -> list[Atoms]:
    """Ideal cells ``cell(repeats)`` with Gaussian displacements of 0.03-0.12 A."""
    structures = []
    for sigma in rng.uniform(0.03, 0.12, size=count):
        atoms = cell(repeats)
        atoms.positions += rng.normal(scale=sigma, size=atoms.positions.shape)
        structures.append(labelled(atoms, "rattle"))
    return structures


def strained(
    repeats: int,
    count: int,
    rng: np.random.Generator,
    cell: Callable[[int], Atoms] = fcc_cell,
) -> list[Atoms]:
    """Cells ``cell(repeats)`` under isotropic strain of up to 3% plus shear of up to 2%,
    lightly rattled."""
    structures = []
    for _ in range(count):
        atoms = cell(repeats)
        strain = np.eye(3) * rng.uniform(-0.03, 0.03)
        shear = np.triu(rng.uniform(-0.02, 0.02, size=(3, 3)), k=1)
        strain += shear + shear.T
        atoms.set_cell(atoms.cell @ (np.eye(3) + strain), scale_atoms=True)
        atoms.positions += rng.normal(scale=0.04, size=atoms.positions.shape)
        structures.append(labelled(atoms, "strain"))
    return structures


def build_dataset(seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """Labelled bulk Cu structures, shuffled and split into (train, valid)."""
    rng = np.random.default_rng(seed)
    makers = {"md": md_snapshots, "rattle": rattled, "strain": strained}
    structures = []
    for config_type, counts in COMPOSITION.items():
        for repeats, count in counts.items():
            structures += makers[config_type](repeats, count, rng)
    return split_train_valid(structures, rng)


def split_train_valid(
    structures: list[Atoms], rng: np.random.Generator
) -> tuple[list[Atoms], list[Atoms]]:
    """Shuffle ``structures`` and split off ``VALID_FRACTION`` of them: (train, valid)."""
    order = rng.permutation(len(structures))
    n_valid = round(VALID_FRACTION * len(structures))
    valid = [structures[i] for i in order[:n_valid]]
    train = [structures[i] for i in order[n_valid:]]
    return train, valid


def train_member(
    member: int,
    train: list[Atoms],
    valid_path: Path,
    workdir: Path,
    epochs: int,
    seed: int,
    name: str = "cu_committee",
) -> Path:
    """Train committee member ``{name}_{member}`` with ``mace_run_train``; return its model file."""
    rng = np.random.default_rng(seed)
    subset = rng.choice(len(train), size=round(SUBSET_FRACTION * len(train)), replace=False)
    member_dir = workdir / f"member_{member}"
    shutil.rmtree(member_dir, ignore_errors=True)  # stale checkpoints would be reloaded
    member_dir.mkdir(parents=True)
    train_path = member_dir / "train.extxyz"
    ase.io.write(train_path, [train[i] for i in sorted(subset)], format="extxyz")

    run_name = f"{name}_{member}"
    argv = [f"--{key}={value}" for key, value in MACE_HYPERPARAMETERS.items()]
    argv += [
        f"--name={run_name}",
        f"--seed={seed}",
        f"--work_dir={member_dir}",
        f"--train_file={train_path}",
        f"--valid_file={valid_path}",
        "--energy_key=REF_energy",
        "--forces_key=REF_forces",
        "--stress_key=REF_stress",
        "--compute_stress=True",
        "--ema",
        # ZBL repulsion: the bulk data never sample close contacts, and buffer relaxations of
        # cut boxes start from them; without it the models let atoms collapse onto each other
        "--pair_repulsion",
        f"--max_num_epochs={epochs}",
        "--default_dtype=float64",
        "--device=cpu",
        "--save_cpu",
        "--plot=False",
        # a checkpoint at every epoch: the training error trajectories of LTAU (seed 003) are
        # evaluated from them; the model written at the end is then the last epoch's
        "--save_all_checkpoints",
        "--keep_checkpoints",
    ]
    log_path = member_dir / "mace_run_train.log"
    with open(log_path, "w") as log:
        completed = subprocess.run(
            [sys.executable, "-m", "mace.cli.run_train", *argv],
            env={**os.environ, FLAG: "1"},  # e3nn's constants and MACE's own model loads
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"mace_run_train failed for member {member}; see {log_path}")
    return member_dir / f"{run_name}.model"


def train_committee(
    train: list[Atoms],
    valid_path: Path,
    out: Path,
    workdir: Path,
    epochs: int,
    seed: int,
    jobs: int,
    start: float,
    n_members: int = N_MEMBERS,
    name: str = "cu_committee",
) -> list[Path]:
    """Train ``n_members`` members, ``jobs`` at a time, and copy them to ``out/{name}_{k}.model``.

    Member k uses seed ``seed + k``; ``start`` (``time.perf_counter()``) times the progress lines.
    """

    def train_and_copy(member: int) -> Path:
        trained = train_member(member, train, valid_path, workdir, epochs, seed + member, name)
        model_path = out / f"{name}_{member}.model"
        shutil.copyfile(trained, model_path)
        print(
            f"member {member}: {epochs} epochs done at {time.perf_counter() - start:.0f} s -> "
            f"{model_path} ({model_path.stat().st_size / 1e3:.0f} kB); logs in {trained.parent}",
            flush=True,
        )
        return model_path

    print(f"training {n_members} members, {jobs} at a time, in {workdir}", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(train_and_copy, range(n_members)))


def print_validation_rmse(model_paths: list[Path], valid: list[Atoms]) -> list[MACECalculator]:
    """Print each member's validation RMSEs; return the members' calculators."""
    with trusted_pickle_loads():  # the models just trained
        calcs = [
            MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
            for path in model_paths
        ]
    print(f"\nvalidation RMSE ({len(valid)} structures)  E (meV/atom)  F (meV/A)  stress (meV/A^3)")
    for member, calc in enumerate(calcs):
        rmse_e, rmse_f, rmse_s = validation_rmse(calc, valid)
        print(f"  member {member}{rmse_e:30.2f}{rmse_f:11.1f}{rmse_s:18.2f}")
    return calcs


def validation_rmse(calc: MACECalculator, valid: list[Atoms]) -> tuple[float, float, float]:
    """RMSE of energy per atom (meV/atom), force components (meV/A) and stress (meV/A^3)."""
    energy_errors, force_errors, stress_errors = [], [], []
    for atoms in valid:
        atoms = atoms.copy()
        atoms.calc = calc
        energy_errors.append((atoms.get_potential_energy() - atoms.info["REF_energy"]) / len(atoms))
        force_errors.append(atoms.get_forces() - atoms.arrays["REF_forces"])
        stress_errors.append(atoms.get_stress(voigt=True) - atoms.info["REF_stress"])
    return tuple(
        1000.0 * np.sqrt(np.mean(np.square(np.concatenate(errors, axis=None))))
        for errors in (energy_errors, force_errors, stress_errors)
    )


def committee_force_std(calcs: list[MACECalculator], atoms: Atoms) -> np.ndarray:
    """Per-atom committee force spread (meV/A), as the monitor computes it."""
    return 1000.0 * Committee(calcs).predict(atoms).atomic_uncertainty


def probes() -> list[tuple[str, Atoms, dict[str, np.ndarray]]]:
    """Probe structures, each with named atom groups (boolean masks).

    * a 6-layer Cu(100) slab (4x4 in-plane, 8 A vacuum each side, as in
      ``mdmonitor demo``): the surface layers, the subsurface layers and the two
      centre layers (a 4-layer slab has no layer away from both surfaces);
    * a 108-atom bulk cell with one vacancy: the 12 former nearest neighbours of
      the vacant site and the atoms more than 5 A from it;
    * the pristine 108-atom cell, the in-domain reference.
    """
    slab = demo_slab(LATTICE_CONSTANT)
    layer = slab.get_tags()  # 1 = top layer, 6 = bottom layer
    slab_groups = {
        "surface layers": np.isin(layer, (1, 6)),
        "subsurface layers": np.isin(layer, (2, 5)),
        "centre layers": np.isin(layer, (3, 4)),
    }

    vacancy = fcc_cell(3)
    vacant_site = vacancy.positions[0].copy()
    del vacancy[0]
    _, distance = get_distances(vacant_site, vacancy.positions, cell=vacancy.cell, pbc=True)
    vacancy_groups = {
        "vacancy neighbours": distance[0] < 3.0,
        "> 5 A from vacancy": distance[0] > 5.0,
    }

    pristine = fcc_cell(3)
    return [
        ("Cu(100) slab", slab, slab_groups),
        ("vacancy", vacancy, vacancy_groups),
        ("pristine bulk", pristine, {"all atoms": np.ones(len(pristine), dtype=bool)}),
    ]


def report_spread(calcs: list[MACECalculator], seed: int) -> None:
    """Print the mean committee force spread of each probe's atom groups, per rattle amplitude."""
    rng = np.random.default_rng(seed)
    header = "".join(f"{f'rattle {sigma:.2f} A':>15}" for sigma in PROBE_RATTLES)
    print(f"\ncommittee force std (meV/A)              {header}")
    for name, atoms, groups in probes():
        spreads = []
        for sigma in PROBE_RATTLES:
            rattled = atoms.copy()
            rattled.positions += rng.normal(scale=sigma, size=atoms.positions.shape)
            spreads.append(committee_force_std(calcs, rattled))
        for group, mask in groups.items():
            values = "".join(f"{spread[mask].mean():15.1f}" for spread in spreads)
            print(f"  {name:14s} {group:20s} ({mask.sum():3d}){values}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Training is bulk-only on purpose: surfaces and vacancies are out of domain, "
        "so the committee spread there is what mdmonitor's demos show.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("mdmonitor/data"),
        help="where cu_train.extxyz, cu_valid.extxyz and cu_committee_*.model are written "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where MACE writes its logs, checkpoints and per-member training subsets "
        "(default: a new directory under the system temporary directory)",
    )
    parser.add_argument(
        "--epochs", type=int, default=25, help="training epochs per member (default: %(default)s)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2 epochs per member; the models are poor, so point --out elsewhere",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="members trained at the same time, one CPU thread each (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=2024,
        help="seed for data, subsets and training; member k uses seed + k (default: %(default)s)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    epochs = 2 if args.quick else args.epochs
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mdmonitor-train-"))
    workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    train, valid = build_dataset(args.seed)
    train_path, valid_path = args.out / "cu_train.extxyz", args.out / "cu_valid.extxyz"
    ase.io.write(train_path, train, format="extxyz")
    ase.io.write(valid_path, valid, format="extxyz")
    print(
        f"EMT data: {len(train)} train -> {train_path} ({train_path.stat().st_size / 1e6:.2f} MB), "
        f"{len(valid)} valid -> {valid_path} ({time.perf_counter() - start:.0f} s)"
    )

    model_paths = train_committee(
        train, valid_path, args.out, workdir, epochs, args.seed, args.jobs, start
    )
    calcs = print_validation_rmse(model_paths, valid)
    report_spread(calcs, args.seed)

    llpr_path = args.out / "cu_llpr.npz"
    LastLayerLPR.fit(model_paths[0], train_path, forces=True).save(llpr_path)
    print(f"\nlast-layer LPR of member 0 (energy and force terms) -> {llpr_path}")

    # LTAU and the GMM see member 0's own training atoms; LTAU its error at every epoch
    member_dir = workdir / "member_0"
    member_train = member_dir / "train.extxyz"
    errors_path = member_dir / "training_errors.npz"
    log_training_errors(model_paths[0], member_dir / "checkpoints", member_train, errors_path)
    LTAU.fit(model_paths[0], member_train, errors_path,
             first_epoch=LTAU_FIRST_EPOCH).save(args.out / "cu_ltau.npz")
    LatentGMM.fit(model_paths[0], member_train).save(args.out / "cu_gmm.npz")
    print(f"LTAU (error log {errors_path}) and latent GMM of member 0 -> "
          f"{args.out / 'cu_ltau.npz'}, {args.out / 'cu_gmm.npz'}")
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
