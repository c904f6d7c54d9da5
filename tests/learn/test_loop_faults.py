"""mdmonitor learn under faults: a killed or interrupted loop takes its trainers with it, a
reference that fails on every box stops the loop with its own words, and a bad calibration in
the config is refused before it is copied into the run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import psutil
import pytest

import mdmonitor
from mdmonitor import Committee
from mdmonitor.learn import ActiveLearning, load_config, training
from mdmonitor.quality.calibration import Calibration, estimator_identity
from mdmonitor.quality.error_maps import ErrorMap, Term
from tests.learn.test_loop import (  # noqa: F401 (a fixture)
    data,
    stopped_before_training,
    write_config,
)

ROOT = Path(__file__).parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
       "OMP_NUM_THREADS": "1"}
TRAINER = "mace.cli.run_train"


def write_config_with(directory, data, more: dict, **sections):  # noqa: F811
    """write_config, and the further sections `more` ({section: {key: value}})."""
    path = write_config(directory, data, **sections)
    path.write_text(path.read_text() + "".join(
        f"[{section}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in
                                   values.items()) for section, values in more.items()))
    return path


@pytest.fixture(scope="module")
def labeled_run(tmp_path_factory, data):  # noqa: F811
    """A run of a 3-member committee whose generation 0 has labeled its boxes and is to train
    (made once per module)."""
    directory = tmp_path_factory.mktemp("labeled-run")
    with stopped_before_training():
        ActiveLearning(load_config(config_of(directory, data)), progress=False).run()
    assert json.loads((directory / "run" / "generation-000" / "state.json")
                      .read_text())["stage"] == "train"
    return directory / "run"


def config_of(directory, data, epochs=1):  # noqa: F811
    return write_config(directory, data, training={"epochs": epochs}, models={
        "committee": mdmonitor.demo_models()["committee"][:3]})


def trainers(process: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in process.children(recursive=True):
        try:
            if any(TRAINER in part for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def alive(processes) -> list[psutil.Process]:
    living = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
        except psutil.NoSuchProcess:
            pass
    return living


def gone_within(processes, seconds: float) -> list[psutil.Process]:
    """The processes still alive after `seconds`."""
    deadline = time.monotonic() + seconds
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(processes)


def learn_until_training(config, tmp_path):
    """`mdmonitor learn CONFIG` in its own process group, once two trainers run."""
    log = open(tmp_path / "learn.log", "w")
    learn = subprocess.Popen([sys.executable, "-m", "mdmonitor.cli", "learn", str(config)],
                             stdout=log, stderr=subprocess.STDOUT, env=ENV,
                             start_new_session=True)
    process = psutil.Process(learn.pid)
    deadline = time.monotonic() + 60
    while len(trainers(process)) < 2:
        assert learn.poll() is None, (tmp_path / "learn.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no two trainers started within 60 s"
        time.sleep(0.2)
    time.sleep(2)  # (mace is reading its data)
    return learn, trainers(process)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT", "SIGINT to the group"])
def test_a_killed_or_interrupted_loop_takes_its_trainers_with_it_and_starts_no_other(
        how, labeled_run, tmp_path, data):  # noqa: F811
    # 3 members, the third waiting for one of the two trainers. (That a rerun after SIGKILL
    # trains what is missing, test_loop's generation killed at every stage checks.)
    shutil.copytree(labeled_run, tmp_path / "run")
    learn, running = learn_until_training(config_of(tmp_path, data, epochs=200), tmp_path)
    assert len(running) == 2
    signum = getattr(signal, how.split()[0])
    if how.endswith("group"):  # Ctrl-C in the terminal
        os.killpg(learn.pid, signum)
    else:
        os.kill(learn.pid, signum)
    try:
        try:
            learn.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"learn did not stop within 10 s of {how}")
        assert gone_within(running, 5) == []
        assert trainers(psutil.Process()) == []
    finally:  # (no trainer outlives the test, whatever it found)
        for process in alive(running + trainers(psutil.Process())):
            process.kill()
        learn.kill()
        learn.wait()
    assert not (tmp_path / "run" / "generation-000" / "training" / "model_2").exists()
    if how != "SIGKILL":
        assert "interrupted" in (tmp_path / "learn.log").read_text()


def test_a_resumed_run_does_not_share_a_work_folder_with_a_trainer_still_alive(
        tmp_path, monkeypatch):
    work = tmp_path / "training" / "model_0"
    work.mkdir(parents=True)
    (work / "train.log").write_text("the old trainer's log")
    # a trainer of a killed run (on a system without PR_SET_PDEATHSIG) holding its lock
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(training.lock_file(work))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(training, "LOCK_WAIT", 1.0)
        with pytest.raises(training.TrainerStillRunning, match=f"pid {holder.pid}"):
            training.train_model(None, tmp_path / "model_0.model", work, {}, 0,
                                 tmp_path / "train.extxyz", None)
        assert (work / "train.log").read_text() == "the old trainer's log"  # left alone
    finally:
        holder.kill()
        holder.wait()


HOLDER = """
import fcntl, os, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.truncate(0); handle.write(str(os.getpid())); handle.flush()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_reference_failing_on_every_box_stops_the_loop_with_its_reason_and_a_fixed_rerun_retries(
        tmp_path, data, capfd):  # noqa: F811
    selection = {"strategy": "whole-frame", "boxes": 1}
    failing = {"calculator": "tests.labeling.references:Raises"}
    bad = write_config_with(tmp_path, data, {"reference": failing, "labeling": {"retries": 0}},
                            selection=selection)
    with pytest.raises(RuntimeError, match="reference.calculator") as stopped:
        ActiveLearning(load_config(bad), progress=False).run()
    message = str(stopped.value)
    assert "\n" not in message
    assert "tests.labeling.references:Raises" in message
    assert "SCF did not converge in 100 cycles" in message
    generation = tmp_path / "run" / "generation-000"
    assert json.loads((generation / "state.json").read_text())["stage"] == "label"
    assert len(list((generation / "candidates" / "failed").glob("*.extxyz"))) == 1

    capfd.readouterr()
    # (the rerun stops where the training would start: the labeling is what is retried, and
    # training after it is what tests/learn/test_loop.py runs)
    good = write_config_with(tmp_path, data, {"labeling": {"retries": 0}}, selection=selection)
    with stopped_before_training():
        ActiveLearning(load_config(good), progress=False).run()
    state = json.loads((generation / "state.json").read_text())
    assert state["stage"] == "train" and state["boxes"] == 1 and state["labeled"] == 1
    assert len(ase.io.read(generation / "labeled.extxyz", index=":")) == 1
    assert list((generation / "candidates" / "failed").glob("*.extxyz")) == []
    assert "1 box(es) the reference failed on moved back to pending" in capfd.readouterr().err


def calibration_file(path, estimator, cutoff, n_atoms=10, error_map=None):
    Calibration(alpha=0.5, cutoff=cutoff, estimator=estimator_identity(estimator), n_frames=2,
                n_atoms=n_atoms, mean_error=0.05, mean_uncertainty=0.1,
                fitted="2025-01-01T00:00:00+00:00", error_map=error_map).save(path)
    return path


def test_a_calibration_of_any_map_form_is_taken_and_its_error_threshold_watched(
        tmp_path, data):  # noqa: F811
    # an element-power map: the MD's threshold went through Calibration.threshold_for, which
    # only the alpha form has, and the run stopped with its ValueError
    estimator = Committee.from_mace(data[1])
    error_map = ErrorMap("element-power", ("committee",), (1e-4,), Term(0.5, (1.0,)),
                         {29: Term(2.0, (0.5,))}).to_dict()
    power = calibration_file(tmp_path / "power.json", estimator, 4.0, error_map=error_map)
    md = {"threshold": 1000.0, "error_threshold": 1000.0, "stop_threshold": 2000.0}
    refused = write_config(tmp_path, data, models={"calibration": str(power)}, md=md)
    with pytest.raises(ValueError, match="models.calibration.*md.stop_threshold is a local "
                                         "uncertainty"):
        ActiveLearning(load_config(refused), progress=False).run()
    del md["stop_threshold"]
    config = write_config(tmp_path, data, models={"calibration": str(power)}, md=md)
    loop = ActiveLearning(load_config(config), progress=False)
    rows = loop.run()
    assert rows[-1]["md_steps"] == 20 and loop.calibration(0).form == "element-power"


def test_a_bad_calibration_is_refused_naming_the_key_and_a_fixed_config_replaces_it(
        tmp_path, data):  # noqa: F811
    estimator = Committee.from_mace(data[1])  # (the models generation 0 copies)
    wrong = calibration_file(tmp_path / "wrong-cutoff.json", estimator, 3.0)
    md = {"threshold": 1000.0}  # (the MD triggers nothing: the generation ends after it)
    bad = write_config(tmp_path, data, models={"calibration": str(wrong)}, md=md)
    with pytest.raises(ValueError, match="models.calibration") as refused:
        ActiveLearning(load_config(bad), progress=False).run()
    assert str(wrong) in str(refused.value) and "calibration.json" not in str(refused.value)
    copy = tmp_path / "run" / "generation-000" / "calibration.json"
    assert not copy.exists()

    right = calibration_file(tmp_path / "right.json", estimator, 4.0)
    good = write_config(tmp_path, data, models={"calibration": str(right)}, md=md)
    loop = ActiveLearning(load_config(good), progress=False)
    rows = loop.run()
    assert rows[-1]["generation"] == 0 and rows[-1]["md_steps"] == 20
    assert loop.calibration(0) == Calibration.load(right)

    # a generation whose MD ran keeps the calibration it ran with
    other = calibration_file(tmp_path / "other.json", estimator, 4.0, n_atoms=11)
    changed = write_config(tmp_path, data, models={"calibration": str(other)}, md=md)
    ActiveLearning(load_config(changed), progress=False).run()
    assert loop.calibration(0) == Calibration.load(right)


def test_a_calibration_copied_before_this_check_is_replaced_while_generation_0_has_not_run(
        tmp_path, data):  # noqa: F811
    estimator = Committee.from_mace(data[1])
    wrong = calibration_file(tmp_path / "wrong-cutoff.json", estimator, 3.0)
    copy = tmp_path / "run" / "generation-000" / "calibration.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wrong, copy)  # as the loop used to copy it, unchecked
    right = calibration_file(tmp_path / "right.json", estimator, 4.0)
    good = write_config(tmp_path, data, models={"calibration": str(right)},
                        md={"threshold": 1000.0})
    loop = ActiveLearning(load_config(good), progress=False)
    loop.run()
    assert loop.calibration(0) == Calibration.load(right)
