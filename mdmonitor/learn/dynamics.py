"""The MD of one generation, with ASE or with LAMMPS, monitored and (for uncertainty-selected
boxes) extracting while it runs. Both engines leave the same files in the generation directory:
monitor.csv (the monitor's log), md.extxyz (frames with atomic_uncertainty and
local_uncertainty arrays) and the boxes in candidates/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units

from ..extraction.extractor import Extractor
from ..lammps.export import export
from ..lammps.run import thermo_rows
from ..md import FRAME_ARRAYS, run_md
from ..monitor import MonitoredCalculator
from ..monitor_log import MonitorLog


@dataclass
class MdOutcome:
    """What a generation's MD did: steps run, boxes cut while it ran, whether it was stopped."""

    steps: int
    boxes: int
    stopped: bool


def run_ase(atoms: Atoms, estimator, md: dict, directory: Path, seed: int,
            extractor: Extractor | None, calibration=None, progress: bool = True) -> MdOutcome:
    """Langevin MD of `atoms` with ASE (settings: the [md] section)."""
    calc = MonitoredCalculator(estimator, cutoff=md["cutoff"], interval=md["interval"],
                               log=directory / "monitor.csv", timestep=md["timestep"] * units.fs,
                               extractor=extractor, **monitor_limits(md, calibration))
    try:
        stop = run_md(atoms, calc, steps=md["steps"], temperature_K=md["temperature"],
                      timestep_fs=md["timestep"], friction=md["friction"],
                      trajectory=directory / "md.extxyz", frame_interval=md["frame_interval"],
                      seed=seed, progress=progress)
    finally:
        if extractor is not None:
            extractor.close()
    boxes = 0 if extractor is None else extractor.boxes_written
    return MdOutcome(md["steps"] if stop is None else stop.step, boxes, stop is not None)


def monitor_limits(md: dict, calibration) -> dict:
    """The thresholds (and calibration) of the ASE engine's MonitoredCalculator: md.threshold,
    or, once there is a calibration (any map form) and md.error_threshold, that expected error
    (eV/A). md.stop_threshold stays a local uncertainty, which a map other than alpha cannot
    watch beside expected errors: ValueError naming the keys."""
    if calibration is None or md["error_threshold"] is None:
        return {"threshold": md["threshold"], "stop_threshold": md["stop_threshold"]}
    if calibration.form != "alpha" and md["stop_threshold"] is not None:
        raise ValueError(f"md.stop_threshold is a local uncertainty, but with a calibration of "
                         f"form {calibration.form} and md.error_threshold the ASE monitor "
                         "compares expected errors; remove md.stop_threshold, use a calibration "
                         "of form alpha, or md.engine = 'lammps' (whose fix takes the map as "
                         "per-type thresholds)")
    return {"calibration": calibration, "error_threshold": md["error_threshold"],
            "stop_threshold": md["stop_threshold"]}


def lammps_threshold(md: dict, calibration, elements: list[str]) -> str | None:
    """The `threshold` of `fix mdmonitor` (type order `elements`): md.threshold, or once there
    is a calibration and md.error_threshold, the local uncertainty at which the map reaches it
    (one per type unless the form is alpha); None: monitored without one (boxes chosen after
    the MD)."""
    if calibration is None or md["error_threshold"] is None:
        return None if md["threshold"] is None else f"{md['threshold']}"
    return calibration.lammps_threshold(md["error_threshold"], elements)


def run_lammps(atoms: Atoms, estimator, md: dict, selection: dict | None, directory: Path,
               seed: int, run_id: str, calibration=None) -> MdOutcome:
    """Langevin MD (fix nve + fix langevin) of `atoms` with the LAMMPS plugin, on md["ranks"]
    MPI ranks; with `selection`, `fix mdmonitor ... extract cube` cuts boxes into candidates/."""
    work = directory / "lammps"
    work.mkdir(exist_ok=True)
    elements = sorted(set(atoms.get_chemical_symbols()), key=atoms.get_chemical_symbols().index)
    export(estimator, work / "model.pt")
    ase.io.write(work / "start.data", atoms, format="lammps-data", specorder=elements,
                 masses=True)
    (work / "in.lmp").write_text(input_script(md, lammps_threshold(md, calibration, elements),
                                              selection, elements, seed, run_id,
                                              directory / "candidates"))
    threads = rank_threads()
    command = [sys.executable, "-m", "mdmonitor.cli", "--threads", threads, "lammps", "in.lmp",
               "--log", "log.lammps"]
    if md["ranks"] > 1:
        command = [shutil.which("mpirun") or "mpirun", "-np", str(md["ranks"]), *command]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": threads})
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).splitlines()[-15:]
        raise RuntimeError(f"LAMMPS run in {work} failed (exit {done.returncode}):\n"
                           + "\n".join(tail))
    rows = thermo_rows(work / "log.lammps")
    thresholds_from = calibration if md["error_threshold"] is not None else None
    write_monitor_log(rows, directory / "monitor.csv", md,
                      None if thresholds_from is None else thresholds_from.digest)
    frames = ase.io.read(work / "md.lammpstrj", index=":", format="lammps-dump-text")
    ase.io.write(directory / "md.extxyz", [trajectory_frame(f) for f in frames],
                 format="extxyz")
    steps = int(rows[-1]["Step"]) if rows else 0
    boxes = int(float(rows[-1]["f_mon[4]"])) if rows and selection else 0
    return MdOutcome(steps, boxes, steps < md["steps"])


def rank_threads() -> str:
    """Threads of each LAMMPS rank: this process's OMP_NUM_THREADS (`mdmonitor --threads N learn`
    sets it, default 1), else 1, as mace_run_train's in training.py."""
    return os.environ.get("OMP_NUM_THREADS", "").strip() or "1"


def input_script(md: dict, threshold: str | None, selection: dict | None, elements: list[str],
                 seed: int, run_id: str, queue: Path) -> str:
    """A LAMMPS input for the generation's MD (metal units: ps, eV, A); `threshold` as `fix
    mdmonitor` takes it (one value, or one per type)."""
    damp = 1e-3 / md["friction"]  # ps: the Langevin damping time is 1 / friction
    extract = ""
    if selection is not None:
        extract = (f" extract cube core {selection['core_radius']} box "
                   f"{selection['box_length']} queue {queue} max_boxes {selection['boxes']} "
                   f"cooldown {selection['cooldown']} run_id {run_id}")
    stop = ""
    if md["stop_threshold"] is not None:
        stop = (f"variable maxunc equal f_mon[1]\n"
                f"fix stop all halt {md['interval']} v_maxunc > {md['stop_threshold']} "
                "error soft\n")
    return (f"units metal\natom_style atomic\nread_data start.data\n"
            f"pair_style mdmonitor model.pt\npair_coeff * * {' '.join(elements)}\n"
            f"timestep {md['timestep'] * 1e-3}\n"
            f"velocity all create {md['temperature']} {seed + 1} dist gaussian mom yes\n"
            f"fix nve all nve\n"
            f"fix heat all langevin {md['temperature']} {md['temperature']} {damp} {seed + 1}\n"
            f"fix mon all mdmonitor {md['interval']} cutoff {md['cutoff']}"
            f"{'' if threshold is None else f' threshold {threshold}'}{extract}\n{stop}"
            f"thermo {md['interval']}\n"
            "thermo_style custom step temp pe f_mon[1] f_mon[2] f_mon[3] f_mon[4]\n"
            "thermo_modify format float %.10g\n"
            f"dump d all custom {md['frame_interval']} md.lammpstrj id element x y z "
            "f_mon[1] f_mon[2]\n"
            f"dump_modify d sort id element {' '.join(elements)}\n"
            f"run {md['steps']}\n")


def write_monitor_log(rows: list[dict], path: Path, md: dict,
                      calibration: str | None = None) -> None:
    """monitor.csv from LAMMPS thermo rows, in the columns MonitoredCalculator writes;
    `calibration` the digest of the calibration the fix's threshold came from."""
    log = MonitorLog(path)
    for row in rows:
        log.append(step=int(row["Step"]), time_fs=row["Step"] * md["timestep"],
                   max_local_uncertainty=row["f_mon[1]"], max_local_atom=int(row["f_mon[2]"]) - 1,
                   mean_local_uncertainty=None, max_atomic_uncertainty=None,
                   n_above_threshold=int(row["f_mon[3]"]), calibration=calibration)
    log.close()


def trajectory_frame(frame: Atoms) -> Atoms:
    """A LAMMPS dump frame as md.extxyz stores it (uncertainties under the monitor's names)."""
    out = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=frame.pbc)
    out.info["step"] = int(frame.info.get("timestep", 0))
    for name, column in zip(FRAME_ARRAYS, ("f_mon[1]", "f_mon[2]")):
        out.arrays[name] = np.asarray(frame.arrays[column], dtype=float)
    return out
