"""mdmonitor learn labeling on Dask workers ([labeling]): every box labeled once, the run
directory as with labeling in the loop's process, a kill -9 of the loop mid-box taken over by the
rerun, and no worker process left behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import psutil
import pytest

from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.learn import ActiveLearning, load_config
from tests.learn.test_config import MINIMAL, write  # noqa: F401 (a fixture)
from tests.learn.test_loop import (  # noqa: F401 (a fixture)
    data,
    stopped_before_training,
    write_config,
)

ROOT = Path(__file__).parents[2]


def config_with(directory, data, labeling, reference=None, **sections):
    """write_config's one generation (with `sections`), labeled as `labeling` says with
    `reference` (TOML text). Its boxes are whole frames: the labeling is what is tested here,
    and a cube's border relaxation took 4 s of MD per box."""
    directory.mkdir(exist_ok=True)
    sections.setdefault("selection", {"strategy": "whole-frame"})
    path = write_config(directory, data, **sections)
    with open(path, "a") as handle:
        handle.write("[labeling]\n" + "".join(f"{k} = {v}\n" for k, v in labeling.items()))
        if reference:
            handle.write(f"[reference]\n{reference}\n")
    return path


def files(directory) -> list[str]:
    """The files of a generation directory, less mace_run_train's work and the claims' lock."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()
                  and "training" not in p.relative_to(directory).parts
                  and p.name != ".lock")


def labeled_boxes(generation) -> list[str]:
    return [a.info["box"] for a in ase.io.read(generation / "labeled.extxyz", index=":")]


def workers_left() -> set[str]:
    """The worker processes (multiprocessing's spawn: Dask's nannies and workers) this process
    has, by pid and command line."""
    return {f"{p.pid}: {' '.join(p.cmdline())}" for p in psutil.Process().children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline())}


def test_two_workers_label_a_generation_as_the_loop_s_process_does_and_end_with_a_run_that_raises(
        tmp_path, data):
    # both runs stop where the training would start: the labels are what is compared, and the
    # LocalCluster must close with a run that raises
    before = workers_left()
    dask = config_with(tmp_path / "dask", data, {"workers": 2})
    with stopped_before_training():
        ActiveLearning(load_config(dask), progress=False).run()
    assert workers_left() - before == set()  # the LocalCluster closed with the run
    in_process = config_with(tmp_path / "in-process", data, {})
    with stopped_before_training():
        ActiveLearning(load_config(in_process), progress=False).run()

    generation = tmp_path / "dask" / "run" / "generation-000"
    expected = tmp_path / "in-process" / "run" / "generation-000"
    states = [{k: v for k, v in json.loads((d / "state.json").read_text()).items()
               if not k.startswith("seconds_")} for d in (generation, expected)]
    assert states[0] == states[1]
    assert states[0]["stage"] == "train" and states[0]["labeled"] == 2
    queue = CandidateQueue(generation / "candidates")
    boxes = sorted(p.name for p in queue.boxes("done"))
    assert len(boxes) == states[0]["boxes"] == 2 and queue.boxes("pending") == []
    assert sorted(labeled_boxes(generation)) == boxes
    assert files(generation) == files(expected)
    energies = [{a.info["box"]: a.info["REF_energy"] for a in
                 ase.io.read(directory / "labeled.extxyz", index=":")}
                for directory in (generation, expected)]  # (in the order they were done)
    assert energies[0] == pytest.approx(energies[1], abs=1e-6)


def test_a_loop_killed_while_its_workers_label_is_resumed_without_a_box_labeled_twice(
        tmp_path, data):
    config = config_with(tmp_path, data, {"workers": 2}, reference=(
        'calculator = "tests.labeling.references:Slow"\nparameters = { seconds = 3.0 }'))
    generation = tmp_path / "run" / "generation-000"
    claims = generation / "candidates" / "claims"
    environment = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}"
                       f"{os.environ.get('PYTHONPATH', '')}")
    loop = subprocess.Popen([sys.executable, "-m", "mdmonitor.cli", "learn", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=environment)
    try:
        deadline = time.time() + 300
        while not list(claims.glob("*.json")):  # the MD has run; the workers label its boxes
            assert loop.poll() is None, loop.stderr.read()[-3000:]
            assert time.time() < deadline, "the loop did not start labeling"
            time.sleep(0.1)
        workers = psutil.Process(loop.pid).children(recursive=True)
    finally:
        loop.send_signal(signal.SIGKILL)
        loop.communicate()
    assert workers and psutil.wait_procs(workers, timeout=60)[1] == []  # they died with it
    held = sorted(p.name[:-len(".json")] for p in claims.glob("*.json"))
    assert held

    before = workers_left()
    with stopped_before_training():  # (the labels are what is checked)
        ActiveLearning(load_config(config), progress=False).run()
    assert workers_left() - before == set()
    queue = CandidateQueue(generation / "candidates")
    boxes = sorted(p.name for p in queue.boxes("done"))
    assert len(boxes) == 2 and queue.boxes("pending") == []
    assert sorted(labeled_boxes(generation)) == boxes  # each box once
    assert sorted(labeled_boxes(generation / "candidates")) == boxes
    assert list(claims.glob("*.json")) == []
    assert queue.manifest.read_text().count(",claim-taken-over,") == len(held)


@pytest.mark.parametrize("labeling, message", [
    ("worker = 2", r"unknown key\(s\) labeling.worker; \[labeling\] knows workers"),
    ("workers = 0", "labeling.workers must be a positive integer, got 0"),
    ("workers = 2\nscheduler = 'tcp://node17:8786'", r"\[labeling\] give workers .* not both"),
    ("timeout = 60", r"\[labeling\] a timeout needs workers \(or a scheduler\)"),
    ("workers = 1\nretries = -1", "labeling.retries must be a non-negative integer, got -1"),
])
def test_a_bad_labeling_key_is_one_error_naming_it(write, labeling, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        load_config(write(MINIMAL + f"[labeling]\n{labeling}\n"))
