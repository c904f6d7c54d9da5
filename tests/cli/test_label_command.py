"""`mdmonitor label` on the command line: its exit status says whether a box failed, options out
of range are usage errors, a LocalCluster the machine cannot hold is refused before any worker
starts (`--workers 1000` on 2 cores had started 264 worker processes), and `--watch --until
FILE` ends once FILE exists and what was pending then is labeled."""

import os
import subprocess
from types import SimpleNamespace

import psutil
import pytest

from mdmonitor.cli import EXIT_ERROR, main
from mdmonitor.cli.labeling import EXIT_BOXES_FAILED
from mdmonitor.labeling import workers
from tests.labeling.references import position_sum
from tests.labeling.test_labeler import queue_with_boxes
from tests.labeling.test_parallel_labeling import label_command, wait_for

REFERENCES = "tests.labeling.references"


def label(queue, reference, *options):
    return main(["label", str(queue.root), "--reference", f"{REFERENCES}:{reference}",
                 "--no-progress", *options])


def test_label_exits_with_status_3_when_a_box_failed(tmp_path, capsys):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 60))
    victim = sorted(names)[0]
    status = label(queue, "Raises", "-p", f"victim={position_sum(queue.read(queue.path('pending', victim)))}",
                   "--retries", "0")
    out = capsys.readouterr().out
    assert status == EXIT_BOXES_FAILED == 3
    assert "labeled 1 boxes" in out and "1 failed" in out and f"failed/{victim}" in out


def test_label_exits_with_status_0_when_every_box_was_labeled(tmp_path, capsys):
    queue, _ = queue_with_boxes(tmp_path, centres=(0,))
    assert label(queue, "Slow") == 0


def test_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["label", "--help"])
    assert "3 when a box went to QUEUE/failed/" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("option, value, message", [
    ("--workers", "0", "positive integer, got 0"),
    ("--threads-per-worker", "0", "positive integer, got 0"),
    ("--retries", "-1", "non-negative integer, got -1"),
    ("--timeout", "-5", "positive number, got -5.0"),
    ("--timeout", "nan", "positive number, got nan"),
    ("--poll", "0", "positive number, got 0.0"),
])
def test_label_refuses_an_option_out_of_range_by_name(tmp_path, capsys, option, value, message):
    queue, _ = queue_with_boxes(tmp_path, centres=(0,))
    with pytest.raises(SystemExit) as done:
        label(queue, "Slow", option, value)
    assert done.value.code == 2
    assert f"error: argument {option}: value must be a {message}" in capsys.readouterr().err
    assert len(queue.boxes("pending")) == 1


def children() -> set[int]:
    """The pids of this process's children (earlier tests may have left helpers running)."""
    return {child.pid for child in psutil.Process().children(recursive=True)}


def test_more_local_workers_than_cores_are_refused_in_one_line(tmp_path, capsys):
    queue, _ = queue_with_boxes(tmp_path, centres=(0,))
    cores, before = os.cpu_count(), children()
    assert label(queue, "Slow", "--workers", str(cores + 1)) == EXIT_ERROR
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert line == (f"mdmonitor label: error: --workers {cores + 1} exceeds the {cores} cores "
                    f"of this machine: give --workers {cores} or fewer (or --scheduler, for "
                    "workers on other machines)")
    assert children() <= before and len(queue.boxes("pending")) == 1  # no worker started


def test_workers_times_threads_beyond_the_cores_are_refused(tmp_path, capsys):
    queue, _ = queue_with_boxes(tmp_path, centres=(0,))
    cores = os.cpu_count()
    assert label(queue, "Slow", "--workers", str(cores), "--threads-per-worker", "2") == EXIT_ERROR
    assert f"--workers {cores} x 2 threads exceeds the {cores} cores" in capsys.readouterr().err


def test_local_workers_beyond_the_available_memory_are_refused(tmp_path, capsys, monkeypatch):
    queue, _ = queue_with_boxes(tmp_path, centres=(0,))
    available = 1.5 * workers.WORKER_MEMORY_BYTES
    monkeypatch.setattr(workers.psutil, "virtual_memory",
                        lambda: SimpleNamespace(available=available))
    before = children()
    assert label(queue, "Slow", "--workers", "2") == EXIT_ERROR
    error = capsys.readouterr().err
    assert ("--workers 2 needs about 2 GB of memory (1 GB each) but 1.5 GB is available: give "
            "--workers 1 or fewer") in error
    assert children() <= before  # no worker started


def test_watch_until_a_file_labels_the_boxes_written_before_it_and_ends(tmp_path):
    """As `mdmonitor lammps --label` runs it: the MD's last box appears, then the file."""
    queue, names = queue_with_boxes(tmp_path, centres=(0, 60))
    first, last = sorted(names)
    held = tmp_path / "held"
    held.mkdir()
    queue.path("pending", last).rename(held / last)
    until = tmp_path / "md-ended"
    watcher = subprocess.Popen(label_command(queue, "Slow", "--watch", "--until", str(until),
                                             "--poll", "0.2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: queue.path("done", first).exists())
        (held / last).rename(queue.path("pending", last))
        until.touch()
        out, err = watcher.communicate(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, err
    assert sorted(p.name for p in queue.boxes("done")) == sorted(names)
    assert out.strip().endswith(f"0 failed; 0 retried; stopped watching: {until} exists")


def test_until_without_watch_is_refused(tmp_path, capsys):
    queue, _ = queue_with_boxes(tmp_path, centres=(0,))
    assert label(queue, "Slow", "--until", str(tmp_path / "ended")) == EXIT_ERROR
    assert "--until FILE ends a labeler that watches the queue: give --watch too" in \
        capsys.readouterr().err
    assert len(queue.boxes("pending")) == 1
