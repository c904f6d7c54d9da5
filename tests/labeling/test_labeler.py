"""Labeling the queue: labels equal the reference, idempotent and resumable, clear failures."""

import os
import signal
import subprocess
import sys
import time
from unittest.mock import ANY

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.labeling.labeler import Labeler
from mdmonitor.labeling.reference import parse_parameters, reference_calculator
from mdmonitor.monitor import Trigger


def queue_with_boxes(root, centres=(0, 40, 90), strategy="embed", **kwargs):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=2)
    extractor = Extractor(strategy, queue=root, core_radius=4.0, max_per_frame=len(centres),
                          separation=0.1, **kwargs)
    local = np.linspace(1, 0, len(atoms))
    names = extractor(Trigger(3, 6.0, atoms, local, local, np.array(centres)))
    return CandidateQueue(root), names


def test_labels_equal_the_reference_evaluated_directly(tmp_path):
    queue, names = queue_with_boxes(tmp_path)
    summary = Labeler(queue, EMT(), reference_name="EMT").run(progress=False)
    assert summary.labeled == sorted(names) and not summary.failed
    assert queue.boxes("pending") == []
    dataset = ase.io.read(queue.dataset, index=":")
    assert [f.info["box"] for f in dataset] == sorted(names)
    for frame in dataset:  # (extxyz stores positions and forces to 1e-8)
        direct = frame.copy()
        direct.calc = EMT()
        assert frame.info["REF_energy"] == pytest.approx(direct.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(frame.arrays["REF_forces"], direct.get_forces(), atol=1e-6)
        np.testing.assert_allclose(frame.info["REF_stress"], direct.get_stress(), atol=1e-7)
        assert frame.info["config_type"] == "mdmonitor-embed"
    done = ase.io.read(queue.path("done", names[0]))
    assert done.info["labeled_with"] == "EMT" and "REF_forces" in done.arrays


def test_labeling_again_or_after_a_crash_adds_nothing_twice(tmp_path):
    queue, names = queue_with_boxes(tmp_path)
    labeler = Labeler(queue, EMT())
    labeler.run(progress=False)
    # a crash after the dataset append but before the move: the box is back in pending
    first = names[0] if names[0] == sorted(names)[-1] else sorted(names)[-1]
    done = queue.path("done", first)
    os.replace(done, queue.path("pending", first))
    Labeler(queue, EMT()).run(progress=False)
    Labeler(queue, EMT()).run(progress=False)
    dataset = ase.io.read(queue.dataset, index=":")
    assert sorted(f.info["box"] for f in dataset) == sorted(names)
    events = [line.split(",")[2] for line in queue.manifest.read_text().splitlines()[1:]]
    assert events.count("written") == len(names)


def test_pending_relaxation_is_done_by_the_labeler_with_the_recorded_model(tmp_path, llpr):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=2)
    extractor = Extractor("cube", queue=tmp_path, core_radius=3.0, box_length=8.0,
                          relax="label")
    extractor.use_estimator(llpr)
    local = np.linspace(1, 0, len(atoms))
    [name] = extractor(Trigger(0, None, atoms, local, local, np.array([0])))
    before = ase.io.read(tmp_path / "pending" / name)
    Labeler(tmp_path, EMT()).run(progress=False)
    stage = "done" if (tmp_path / "done" / name).exists() else "failed"
    after = ase.io.read(tmp_path / stage / name)
    assert after.info["relaxation"] == "relaxed" and after.info["relax_steps"] == 55
    core = before.arrays["core_mask"]
    assert np.array_equal(after.positions[core], before.positions[core])
    assert not np.allclose(after.positions[~core], before.positions[~core])


def test_a_corrupt_box_goes_to_failed_with_its_reason_and_the_rest_is_labeled(tmp_path):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 60))
    broken = queue.path("pending", "run_step000000003_atom0000099_s00.extxyz")
    broken.write_text("3\nnot an extxyz header\nCu 0 0\n")
    summary = Labeler(queue, EMT()).run(progress=False)
    assert summary.labeled == sorted(names)
    assert list(summary.failed) == [broken.name]
    assert "not a readable extxyz box" in summary.failed[broken.name]
    assert queue.path("failed", broken.name).read_text().startswith("3\nnot an extxyz")


def test_a_box_with_nan_positions_goes_to_failed_without_reaching_the_reference(tmp_path):
    """A NaN box (edited by hand, or written before the gates refused them) hung the labeler."""
    queue, [name] = queue_with_boxes(tmp_path, centres=(0,))
    box = queue.read(queue.path("pending", name))
    box.positions[2] = np.nan
    queue.write(box, name, "pending", "written")

    class Counting(EMT):
        calls = 0

        def calculate(self, *args, **kwargs):
            Counting.calls += 1
            super().calculate(*args, **kwargs)

    summary = Labeler(queue, Counting()).run(progress=False)
    assert list(summary.failed) == [name] and Counting.calls == 0
    assert "positions" in summary.failed[name] and "atom 2" in summary.failed[name]


def test_a_failing_reference_is_retried_then_the_box_fails_with_its_reason(tmp_path):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 50))
    calls = []

    class BrokenOnFirstBox(EMT):
        def calculate(self, atoms, *args, **kwargs):
            calls.append(len(atoms))
            if len(calls) <= 3:  # the three attempts at the first box
                raise RuntimeError("SCF did not converge")
            super().calculate(atoms, *args, **kwargs)

    summary = Labeler(queue, BrokenOnFirstBox(), retries=2).run(progress=False)
    first, second = sorted(names)
    assert len(calls) == 4 and summary.labeled == [second]
    assert list(summary.failed) == [first] and summary.retried == {first: ANY}
    failed = queue.read(queue.path("failed", first))
    assert failed.info["label_attempts"] == 3
    assert "SCF did not converge" in failed.info["failure"] and "attempt 3 of 3" in failed.info["failure"]
    events = [line.split(",")[2] for line in queue.manifest.read_text().splitlines()[1:]]
    assert events.count("retry") == 2 and events.count("failed") == 1
    assert [p.name for p in queue.boxes("pending")] == []


def test_a_box_moved_back_from_failed_is_tried_afresh(tmp_path):
    queue, [name] = queue_with_boxes(tmp_path, centres=(0,))

    class Broken(EMT):
        def calculate(self, *args, **kwargs):
            raise RuntimeError("SCF did not converge")

    Labeler(queue, Broken(), retries=0).run(progress=False)
    os.replace(queue.path("failed", name), queue.path("pending", name))
    assert Labeler(queue, EMT(), retries=0).run(progress=False).labeled == [name]
    assert "failure" not in ase.io.read(queue.dataset).info


def test_reference_from_module_and_class_with_parameters():
    calc = reference_calculator("ase.calculators.lj:LennardJones",
                                parse_parameters(["sigma=2.3", "epsilon=0.4", "smooth=True"]))
    assert calc.parameters["sigma"] == 2.3 and calc.parameters["smooth"] is True
    with pytest.raises(ValueError, match="cannot import module 'no_such_code.dft'"):
        reference_calculator("no_such_code.dft:DFT")
    with pytest.raises(ValueError, match="has no 'Nope'"):
        reference_calculator("ase.calculators.emt:Nope")
    with pytest.raises(ValueError, match="module:Class"):
        reference_calculator("EMT")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_parameters(["xc"])


@pytest.fixture(params=["python's", "sys.exit"])
def ctrl_c_handler(request):
    """SIGINT's handler during the test: Python's, or one that calls sys.exit, as
    dask_jobqueue installs when it is imported."""
    handler = signal.default_int_handler if request.param == "python's" else (
        lambda *_: sys.exit())
    previous = signal.signal(signal.SIGINT, handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_a_box_is_filed_waits_until_it_is_filed_and_counted(tmp_path, monkeypatch,
                                                                         ctrl_c_handler):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 50))
    move = CandidateQueue.move

    def interrupted_move(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the dataset append and the move
        move(self, *args, **kwargs)

    monkeypatch.setattr(CandidateQueue, "move", interrupted_move)
    labeler = Labeler(queue, EMT())
    with pytest.raises(KeyboardInterrupt):
        labeler.run(progress=False)
    assert labeler.summary.labeled == [names[0]] == [p.name for p in queue.boxes("done")]
    assert len(ase.io.read(queue.dataset, index=":")) == 1
    monkeypatch.setattr(CandidateQueue, "move", move)
    assert Labeler(queue, EMT()).run(progress=False).labeled == [names[1]]
    assert [f.info["box"] for f in ase.io.read(queue.dataset, index=":")] == sorted(names)


def test_label_watch_labels_boxes_that_appear_while_it_runs(tmp_path):
    queue = CandidateQueue(tmp_path / "q")
    process = subprocess.Popen(
        [sys.executable, "-m", "mdmonitor.cli", "label", str(queue.root), "--reference",
         "ase.calculators.emt:EMT", "--watch", "--poll", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        _, names = queue_with_boxes(queue.root, centres=(0, 50))
        deadline = time.time() + 120
        while len(queue.boxes("done")) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert [p.name for p in queue.boxes("done")] == sorted(names)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "labeled 2 boxes" in out
