"""The labeled dataset stays whole: appends are all-or-nothing, a full disk stops the labeler
with the box left pending, and a frame torn by a kill is cut off (and kept) on restart."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest
from ase import Atoms
from ase.calculators.emt import EMT

from mdmonitor.extraction.candidates import STAGES, extxyz_text
from mdmonitor.labeling.dataset import whole_frames_length
from mdmonitor.labeling.labeler import Labeler, QueueWriteFailed, TornFrameCut
from tests.labeling.test_labeler import queue_with_boxes


def dataset_boxes(queue) -> list[str]:
    """Box names of the frames of the queue's labeled dataset, in order."""
    if queue.dataset.stat().st_size == 0:
        return []
    return [frame.info["box"] for frame in ase.io.read(queue.dataset, index=":")]


def is_dataset(descriptor: int) -> bool:
    return os.readlink(f"/proc/self/fd/{descriptor}").endswith("labeled.extxyz")


def test_short_writes_are_continued_until_the_frame_is_whole(tmp_path, monkeypatch):
    queue, names = queue_with_boxes(tmp_path)
    write = os.write
    calls = []

    def short_write(descriptor, data):  # what a signal or a nearly full disk can do
        calls.append(descriptor)
        return write(descriptor, bytes(data[:97]))

    monkeypatch.setattr(os, "write", short_write)
    summary = Labeler(queue, EMT()).run(progress=False)
    monkeypatch.undo()
    assert summary.labeled == sorted(names) and len(calls) > 3 * 90
    assert dataset_boxes(queue) == sorted(names)
    assert whole_frames_length(queue.dataset) == queue.dataset.stat().st_size


@pytest.mark.parametrize("written_before_the_disk_is_full", [0.5, 0.0])
def test_a_full_disk_stops_the_labeler_with_the_box_pending_and_the_dataset_whole(
        tmp_path, monkeypatch, written_before_the_disk_is_full):
    queue, names = queue_with_boxes(tmp_path)
    first, second, third = sorted(names)
    write = os.write
    appends = []

    def disk_full_at_the_second_frame(descriptor, data):
        if is_dataset(descriptor):
            appends.append(len(data))
            if len(appends) == 2:
                write(descriptor, bytes(data[:int(len(data) * written_before_the_disk_is_full)]))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(descriptor, data)

    monkeypatch.setattr(os, "write", disk_full_at_the_second_frame)
    labeler = Labeler(queue, EMT())
    with pytest.raises(QueueWriteFailed) as stop:
        labeler.run(progress=False)
    monkeypatch.undo()
    message = str(stop.value)
    assert "\n" not in message and "No space left on device" in message
    assert f"box '{second}'" in message and "stays in pending/" in message
    assert labeler.summary.labeled == [first]
    assert [p.name for p in queue.boxes("done")] == [first]
    assert [p.name for p in queue.boxes("pending")] == [second, third]
    assert dataset_boxes(queue) == [first]
    assert whole_frames_length(queue.dataset) == queue.dataset.stat().st_size

    assert Labeler(queue, EMT()).run(progress=False).labeled == [second, third]
    assert dataset_boxes(queue) == sorted(names)


def frame_starts(path: Path) -> list[int]:
    """Byte offsets of the frames of extxyz file `path`, then its length."""
    lines = path.read_bytes().splitlines(keepends=True)
    starts, line = [0], 0
    for frame in ase.io.read(path, index=":"):
        line += len(frame) + 2
        starts.append(sum(map(len, lines[:line])))
    return starts


@pytest.mark.parametrize("kept_part", [
    lambda frame: 1, lambda frame: frame.index(b"\n") + 1, lambda frame: 200,
    lambda frame: len(frame) - 1,
], ids=["in the count line", "after the count line", "mid-line", "all but the last newline"])
def test_a_frame_torn_by_a_kill_is_cut_off_kept_and_labeled_again(tmp_path, kept_part):
    queue, names = queue_with_boxes(tmp_path)
    Labeler(queue, EMT()).run(progress=False)
    last = max(names)
    # what a kill in mid-append of the last frame leaves: part of it, and its box pending
    *_, start, end = frame_starts(queue.dataset)
    data = queue.dataset.read_bytes()
    torn = data[start:start + kept_part(data[start:end])]
    queue.dataset.write_bytes(data[:start] + torn)
    os.replace(queue.path("done", last), queue.path("pending", last))

    with pytest.warns(TornFrameCut, match="torn in mid-append") as warned:
        summary = Labeler(queue, EMT()).run(progress=False)
    assert summary.labeled == [last]
    assert dataset_boxes(queue) == sorted(names)
    [side] = queue.root.glob("labeled.extxyz.torn-*")
    assert side.read_bytes() == torn and str(side) in str(warned[0].message)
    assert ",labeled.extxyz,torn-frame-cut," in queue.manifest.read_text()


def test_whole_frames_length_at_every_cut_of_an_append(tmp_path):
    frames = [Atoms("Cu3", positions=[[0, 0, 0], [1.8, 0, 0], [0, 1.8, 0]], cell=[5, 5, 5],
                    pbc=True, info={"box": f"b{k}", "REF_energy": -1.5 * k}) for k in (1, 2)]
    path = tmp_path / "two.extxyz"
    path.write_text(extxyz_text(frames))
    data = path.read_bytes()
    _, first, end = frame_starts(path)
    for length in range(end + 1):
        path.write_bytes(data[:length])
        expected = end if length == end else first if length >= first else 0
        assert whole_frames_length(path) == expected, length
    path.write_bytes(data + b"\n")
    with pytest.raises(ValueError, match="two.extxyz' line 11: expected the atom count"):
        whole_frames_length(path)


LABELER_KILLED_IN_MID_APPEND = """
import os, sys, time
from ase.calculators.emt import EMT
from mdmonitor.labeling.labeler import Labeler

write = os.write

def slow_second_frame(descriptor, data):  # holds the labeler in mid-append for the kill
    if (os.readlink(f"/proc/self/fd/{descriptor}").endswith("labeled.extxyz")
            and os.fstat(descriptor).st_size > 0):
        write(descriptor, bytes(data[:len(data) // 2]))
        print("half of the second frame written", flush=True)
        time.sleep(600)
    return write(descriptor, data)

os.write = slow_second_frame
Labeler(sys.argv[1], EMT()).run(progress=False)
"""


def test_a_labeler_killed_in_mid_append_is_repaired_by_the_next_one(tmp_path):
    queue, names = queue_with_boxes(tmp_path / "queue")
    _, second, third = sorted(names)
    labeler = subprocess.Popen([sys.executable, "-c", LABELER_KILLED_IN_MID_APPEND,
                                str(queue.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert labeler.stdout.readline() == "half of the second frame written\n"
    finally:
        labeler.send_signal(signal.SIGKILL)
        labeler.communicate()
    torn = queue.dataset.read_bytes()[whole_frames_length(queue.dataset):]
    assert len(torn) > 1000  # half a frame
    assert [p.name for p in queue.boxes("pending")] == [second, third]

    with pytest.warns(TornFrameCut):
        summary = Labeler(queue, EMT()).run(progress=False)
    assert summary.labeled == [second, third]
    assert dataset_boxes(queue) == sorted(names)
    [side] = queue.root.glob("labeled.extxyz.torn-*")
    assert side.read_bytes() == torn


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs, a disk that really fills up (skipped where it cannot be mounted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                           check=False, capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("free_kib, frames_written", [(6, 0), (16, 1)],
                         ids=["full in the dataset append", "full in the move to done"])
def test_a_really_full_disk_leaves_every_box_filed_and_the_dataset_whole(
        small_disk, free_kib, frames_written):
    queue, names = queue_with_boxes(small_disk / "queue")
    space = os.statvfs(small_disk)
    ballast = small_disk / "ballast"
    ballast.write_bytes(bytes(space.f_bavail * space.f_frsize - free_kib * 1024))
    labeler = Labeler(queue, EMT())
    with pytest.raises(QueueWriteFailed, match="No space left on device"):
        labeler.run(progress=False)
    assert whole_frames_length(queue.dataset) == queue.dataset.stat().st_size
    assert len(dataset_boxes(queue)) == frames_written
    assert labeler.summary.labeled == [p.name for p in queue.boxes("done")] == []
    files = sorted(p.name for stage in STAGES for p in (queue.root / stage).iterdir())
    assert files == sorted(names)  # every box in one stage, no temporary file left

    ballast.unlink()
    assert Labeler(queue, EMT()).run(progress=False).labeled == sorted(names)
    assert dataset_boxes(queue) == sorted(names)
