"""What a user sees while boxes are labeled on workers: one line of ours per retry and per failed
box, and Dask's own log (a "Compute Failed" traceback in the middle of the progress bar) in
QUEUE/labeling.log instead, unless `mdmonitor --debug label` asks for it."""

import logging
import os
import subprocess

import pytest

from mdmonitor.labeling.labeler import Labeler
from mdmonitor.labeling.reference import Reference
from mdmonitor.labeling.workers import DaskWorkers
from tests.labeling.test_labeler import queue_with_boxes
from tests.labeling.test_parallel_labeling import REFERENCES, label_command, victim_of

SCF = "RuntimeError: SCF did not converge in 100 cycles"


def reason(box: str) -> str:
    return f"reference {REFERENCES}:Raises failed on box '{box}': {SCF}"


def label_a_failing_box(tmp_path, *before):
    """`mdmonitor [before] label` on 2 workers of two boxes, one whose reference raises."""
    queue, names = queue_with_boxes(tmp_path, centres=(0, 60))
    victim = sorted(names)[0]
    command = label_command(queue, "Raises", "-p", f"victim={victim_of(queue, victim)}",
                            "--workers", "2", "--retries", "1")
    command[3:3] = before  # (after `python -m mdmonitor.cli`)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    return queue, victim, done


def test_a_failing_reference_on_workers_is_one_line_per_attempt_and_no_dask_traceback(tmp_path):
    queue, victim, done = label_a_failing_box(tmp_path)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "distributed." not in done.stderr
    assert done.stderr.splitlines() == [
        f"{victim}: attempt 1 of 2 failed, retrying: {reason(victim)}",
        f"{victim}: failed, moved to failed/: {reason(victim)} (attempt 2 of 2)"]
    log = (queue.root / "labeling.log").read_text()
    assert "distributed.worker - ERROR - Compute Failed" in log and SCF in log


def test_debug_shows_dask_s_log(tmp_path):
    queue, victim, done = label_a_failing_box(tmp_path, "--debug")
    assert done.returncode == 3, done.stderr
    assert "distributed.worker - ERROR - Compute Failed" in done.stderr
    assert not (queue.root / "labeling.log").exists()


def test_the_labeler_restores_dask_s_logging_and_the_environment_in_this_process(
        tmp_path, monkeypatch):
    queue, names = queue_with_boxes(tmp_path, centres=(0,))
    logger = logging.getLogger("distributed")
    before = logger.handlers[:], logger.level, logger.propagate
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # (Dask's nannies set 1 in their process)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    environment = dict(os.environ)
    lines = []
    summary = Labeler(queue, Reference(f"{REFERENCES}:Raises"), workers=1, retries=0,
                      dask_log=tmp_path / "dask.log", say=lines.append).run(progress=False)
    assert list(summary.failed) == names and lines == [
        f"{names[0]}: failed, moved to failed/: {reason(names[0])} (attempt 1 of 1)"]
    assert (logger.handlers, logger.level, logger.propagate) == before
    assert dict(os.environ) == environment
    assert "Compute Failed" in (tmp_path / "dask.log").read_text()


def test_a_local_cluster_that_fails_to_start_leaves_the_environment_as_it_was(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    environment = dict(os.environ)
    with pytest.raises(RuntimeError, match="Nanny failed to start"):
        DaskWorkers(workers=1, preload=("mdmonitor.no_such_module",), wait_for_workers=30)
    assert dict(os.environ) == environment
