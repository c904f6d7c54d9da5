"""Labeling on Dask workers and by several labelers at once: every box ends in the dataset
exactly once or in failed/ with its reason, whatever dies, raises, hangs or gives NaN."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import ase.io
import numpy as np
import psutil
import pytest
from ase.calculators.emt import EMT

from mdmonitor.extraction.candidates import STAGES
from mdmonitor.labeling.labeler import Labeler, label_box, open_pool
from mdmonitor.labeling.reference import Reference
from mdmonitor.labeling.workers import DaskWorkers, kill_this_process
from tests.labeling.references import Dies, position_sum
from tests.labeling.test_labeler import queue_with_boxes

REFERENCES = "tests.labeling.references"


def dataset_boxes(queue) -> list[str]:
    if not queue.dataset.exists() or queue.dataset.stat().st_size == 0:
        return []
    return [frame.info["box"] for frame in ase.io.read(queue.dataset, index=":")]


def assert_every_box_filed_once(queue, names, failed=()):
    """Each box in done/ and the dataset exactly once, or in failed/; nothing pending or claimed."""
    assert sorted(dataset_boxes(queue)) == sorted(set(names) - set(failed))
    assert sorted(p.name for p in queue.boxes("failed")) == sorted(failed)
    assert sorted(p.name for p in queue.boxes("done")) == sorted(set(names) - set(failed))
    assert queue.boxes("pending") == []
    assert list((queue.root / "claims").glob("*.json")) == []


def victim_of(queue, name) -> float:
    return position_sum(queue.read(queue.path("pending", name)))


def test_workers_label_every_box_once_with_the_reference_labels(tmp_path):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 30, 60, 90))
    summary = Labeler(queue, Reference("ase.calculators.emt:EMT"), workers=2).run(progress=False)
    assert sorted(summary.labeled) == sorted(names) and not summary.failed
    assert_every_box_filed_once(queue, names)
    for frame in ase.io.read(queue.dataset, index=":"):
        direct = frame.copy()
        direct.calc = EMT()
        assert frame.info["REF_energy"] == pytest.approx(direct.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(frame.arrays["REF_forces"], direct.get_forces(), atol=1e-6)
        assert frame.info["labeled_with"] == "ase.calculators.emt:EMT"


@pytest.mark.parametrize("timeout, imported", [(None, []), (60.0, ["mace", "torch"])])
def test_a_worker_imports_torch_and_mace_as_it_starts_only_for_a_timeout(
        tmp_path, timeout, imported):
    """Workers import the labeler as they start (and again after each restart); a box that
    needs no relaxation is labeled without torch or mace, whose import costs 5 s of CPU. With
    a timeout they import them as they start: on the first box to relax, it would count."""
    queue, names = queue_with_boxes(tmp_path, centres=(0,))
    pool = open_pool(workers=1, timeout=timeout)
    try:
        outcome = pool.client.submit(label_box, str(queue.path("pending", names[0])),
                                     Reference("ase.calculators.emt:EMT"), "EMT", None).result()
        assert outcome.failure == "" and not outcome.relaxed
        assert "REF_forces" in outcome.box.arrays
        loaded = pool.client.run(lambda: sorted({"torch", "mace"} & set(sys.modules)))
        assert list(loaded.values()) == [imported]
    finally:
        pool.close()


@pytest.mark.parametrize("behaviour, timeout, reason, attempts", [
    ("Raises", 4, "RuntimeError: SCF did not converge in 100 cycles", 2),
    ("GivesNaN", None, "reference gave non-finite REF_forces", 1),
    ("Hangs", 4, "no result within the timeout of 4 s (its worker was killed)", 2),
    ("Dies", None, "its worker died", 2),
])
def test_a_misbehaving_reference_fails_its_box_with_the_reason_and_labels_the_rest(
        tmp_path, behaviour, timeout, reason, attempts):
    """(With a timeout, each worker imports torch and MACE as it starts, 5 s of CPU: only the
    hang needs one, and a reference that raises is not taken for one that hangs.)"""
    queue, names = queue_with_boxes(tmp_path, centres=(0, 60))
    victim, other = sorted(names)
    reference = Reference(f"{REFERENCES}:{behaviour}", {"victim": victim_of(queue, victim)})
    summary = Labeler(queue, reference, workers=1, retries=1, timeout=timeout).run(
        progress=False)
    assert summary.labeled == [other] and list(summary.failed) == [victim]
    assert reason in summary.failed[victim]
    assert_every_box_filed_once(queue, names, failed=[victim])
    failed = queue.read(queue.path("failed", victim))
    assert failed.info.get("label_attempts", 1) == attempts


def test_a_worker_killed_mid_calculation_is_retried_and_the_box_labeled_once(tmp_path):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 60))
    markers = tmp_path / "markers"
    markers.mkdir()
    reference = Dies(times=1, marker_dir=str(markers))  # each box kills its worker once
    summary = Labeler(queue, reference, workers=1, retries=1).run(progress=False)
    assert sorted(summary.labeled) == sorted(names) and not summary.failed
    assert sorted(summary.retried) == sorted(names)
    assert all("worker died" in reason for reason in summary.retried.values())
    assert_every_box_filed_once(queue, names)


def label_command(queue, reference, *options):
    return [sys.executable, "-m", "mdmonitor.cli", "label", str(queue.root), "--reference",
            f"{REFERENCES}:{reference}", "--no-progress", *options]


def wait_for(condition, seconds=120.0):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_a_labeler_killed_mid_box_leaves_claims_the_next_one_takes_over(tmp_path):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 40, 90))
    claims = queue.root / "claims"
    labeler = subprocess.Popen(label_command(queue, "Slow", "-p", "seconds=2.0", "--workers", "1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list(claims.glob("*.json")))
        workers = psutil.Process(labeler.pid).children(recursive=True)
    finally:
        labeler.send_signal(signal.SIGKILL)
        labeler.communicate()
    [claim] = claims.glob("*.json")
    assert json.loads(claim.read_text())["pid"] == labeler.pid
    assert workers and psutil.wait_procs(workers, timeout=60)[1] == []  # the workers die too

    summary = Labeler(queue, EMT()).run(progress=False)
    assert list(summary.taken_over) == [claim.name[:-len(".json")]]
    assert sorted(summary.labeled) == sorted(names)
    assert_every_box_filed_once(queue, names)
    assert ",claim-taken-over," in queue.manifest.read_text()


def write_claim(queue, name, host, pid, started):
    (queue.root / "claims").mkdir(exist_ok=True)
    claim = {"host": host, "pid": pid, "started": started}
    (queue.root / "claims" / f"{name}.json").write_text(json.dumps(claim))


def dead_process_claim(queue, name):
    """Write the claim a labeler killed while labeling box `name` leaves behind."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(dead.pid).create_time()
    dead.wait()
    write_claim(queue, name, os.uname().nodename, dead.pid, started)


def test_a_labeler_killed_between_the_append_and_the_move_adds_nothing_twice(tmp_path):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 60))
    Labeler(queue, EMT()).run(progress=False)
    first = sorted(names)[0]
    os.replace(queue.path("done", first), queue.path("pending", first))  # in the dataset
    dead_process_claim(queue, first)
    summary = Labeler(queue, EMT()).run(progress=False)
    assert summary.labeled == [first] and list(summary.taken_over) == [first]
    assert dataset_boxes(queue) == sorted(names)
    assert_every_box_filed_once(queue, names)


def test_a_claim_of_a_running_labeler_is_respected(tmp_path):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 60))
    held = sorted(names)[0]
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        write_claim(queue, held, os.uname().nodename, alive.pid,
                    psutil.Process(alive.pid).create_time())
        summary = Labeler(queue, EMT()).run(progress=False)
    finally:
        alive.kill()
        alive.wait()
    assert summary.labeled == [sorted(names)[1]]
    assert [p.name for p in queue.boxes("pending")] == [held]
    assert Labeler(queue, EMT()).run(progress=False).labeled == [held]  # now it is dead


def test_claims_of_another_host_wait_for_release_host(tmp_path):
    queue, names = queue_with_boxes(tmp_path, centres=(0,))
    write_claim(queue, names[0], "node-that-is-gone", 1234, 1.0)
    labeler = Labeler(queue, EMT())
    assert labeler.run(progress=False).labeled == []
    assert labeler.claims.release_host("node-that-is-gone") == names
    assert labeler.run(progress=False).labeled == names


def test_labelers_at_once_label_every_box_exactly_once(tmp_path):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 15, 30, 45, 60, 75, 90, 105))
    labelers = [subprocess.Popen(label_command(queue, "Slow", "-p", "seconds=0.3", *workers),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for workers in ((), (), ("--workers", "1"))]
    outputs = [labeler.communicate(timeout=600) for labeler in labelers]
    assert [labeler.returncode for labeler in labelers] == [0, 0, 0], outputs
    counts = [int(out.split("labeled ")[1].split()[0]) for out, _ in outputs]
    assert sum(counts) == len(names)
    assert_every_box_filed_once(queue, names)
    events = [line.split(",")[2] for line in queue.manifest.read_text().splitlines()[1:]]
    assert events.count("labeled") == len(names)
    files = sorted(p.name for stage in STAGES for p in (queue.root / stage).iterdir())
    assert files == sorted(names)


def test_bad_pool_settings_are_refused_with_the_reason(tmp_path):
    queue, _ = queue_with_boxes(tmp_path, centres=(0,))
    with pytest.raises(ValueError, match="timeout needs workers"):
        Labeler(queue, EMT(), timeout=10)
    with pytest.raises(ValueError, match="not both"):
        Labeler(queue, EMT(), workers=2, scheduler="tcp://localhost:8786").run(progress=False)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        Labeler(queue, EMT(), workers=0).run(progress=False)
    with pytest.raises(ValueError, match="retries must be 0 or more"):
        Labeler(queue, EMT(), retries=-1)
    with pytest.raises(RuntimeError, match="cannot reach the Dask scheduler at 'tcp://127"):
        DaskWorkers(scheduler="tcp://127.0.0.1:9", connect_timeout=1)


def test_a_worker_whose_nanny_gave_up_is_replaced():
    """A nanny that loses a race with the scheduler as its worker dies closes for good."""
    pool = DaskWorkers(workers=1)
    try:
        [nanny] = pool.cluster.workers.values()
        pool.cluster.sync(nanny.close)
        assert nanny.status.name == "closed"
        pool.wait_for_slots()
        assert pool.slots == 1 and list(pool.cluster.workers.values()) != [nanny]
    finally:
        pool.close()


def test_a_worker_whose_nanny_the_cluster_dropped_is_replaced():
    """The cluster drops a nanny whose worker is not back 15 s after the first of two losses
    (what failed the Hangs case above on loaded machines): it closes it, forgets it, and starts
    no other worker for its spec."""
    pool = DaskWorkers(workers=1, wait_for_workers=60.0)
    try:
        [(name, nanny)] = pool.cluster.workers.items()
        pool.cluster.sync(nanny.close)  # (as SpecCluster._update_worker_status does)
        del pool.cluster.workers[name]
        pool.restart_grace = 1e9  # (not by the replacement of a hung nanny)
        pool.wait_for_slots()
        assert pool.slots == 1
    finally:
        pool.close()


def test_a_worker_whose_restart_failed_is_replaced():
    """A nanny whose restart fails after its worker died stays open with no worker."""
    pool = DaskWorkers(workers=1)
    try:
        [nanny] = pool.cluster.workers.values()

        async def fails():
            raise OSError("no restart (as on a loaded machine)")

        nanny.instantiate = fails
        with contextlib.suppress(Exception):  # (the worker dies before it can answer)
            pool.client.run(kill_this_process)
        while pool.client.nthreads():  # (until the scheduler has lost the worker)
            time.sleep(0.1)
        pool.restart_grace = 2.0
        pool.wait_for_slots()
        assert pool.slots == 1 and list(pool.cluster.workers.values()) != [nanny]
    finally:
        pool.close()
