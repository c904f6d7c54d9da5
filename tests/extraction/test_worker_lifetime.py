"""relax="worker": the background relaxation process ends with the MD process that started it,
even when the MD is killed with kill -9 in the middle of a relaxation."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MD_SCRIPT = """
import sys, time
import numpy as np, torch
from ase.build import bulk
import mdmonitor
from mdmonitor import LastLayerLPR, MonitoredCalculator
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.monitor import Trigger

torch.set_num_threads(1)
atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
atoms.rattle(0.05, seed=2)
local = np.linspace(1, 0, len(atoms))
extractor = Extractor("cube", queue=sys.argv[1], core_radius=3.0, box_length=8.0,
                      relax="worker", cooldown=1)
MonitoredCalculator(LastLayerLPR.load(mdmonitor.demo_models()["llpr"]), cutoff=4.0,
                    threshold=0.5, extractor=extractor)
extractor(Trigger(0, None, atoms, local, local, np.array([0])))
while extractor._in_flight:  # the worker has started and relaxed the first box
    time.sleep(0.1)
extractor(Trigger(1, None, atoms, local, local, np.array([50])))
print("relaxing", flush=True)
time.sleep(600)
"""


def state(pid: int) -> str | None:
    """The process state letter of `pid` (R, S, Z, ...), None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def spawned_children(parent: int) -> list[int]:
    """Processes started by `parent` with multiprocessing's spawn (not its resource tracker)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (ValueError, OSError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in command:
            children.append(int(entry.name))
    return children


def test_the_worker_dies_with_a_killed_md_process(tmp_path):
    errors = tmp_path / "md.err"
    with open(errors, "w") as stderr:
        md = subprocess.Popen([sys.executable, "-c", MD_SCRIPT, str(tmp_path / "queue")],
                              stdout=subprocess.PIPE, stderr=stderr, text=True)
    workers = []
    try:
        assert "relaxing\n" in iter(md.stdout.readline, ""), errors.read_text()
        workers = spawned_children(md.pid)
        assert len(workers) == 1 and state(workers[0]) not in (None, "Z")
        os.kill(md.pid, signal.SIGKILL)
        md.wait(timeout=10)
        deadline = time.time() + 5
        while state(workers[0]) not in (None, "Z") and time.time() < deadline:
            time.sleep(0.1)
        assert state(workers[0]) in (None, "Z"), "the worker outlived the MD process"
    finally:
        for worker in workers:  # (an orphan left by a failing run, which holds md.stdout)
            if state(worker) not in (None, "Z"):
                os.kill(worker, signal.SIGKILL)
        md.kill()
        md.communicate()
