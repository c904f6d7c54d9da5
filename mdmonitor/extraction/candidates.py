"""The candidate queue: a directory of cut boxes waiting for (or done with) ab-initio labels.

    queue/
      pending/   boxes to label, one extxyz file each
      done/      labeled boxes (labels under REF_energy, REF_forces, REF_stress)
      failed/    boxes that failed a quality gate or labeling; info["failure"] says why
      labeled.extxyz   every labeled box, ready for MACE training (appended whole, see
                       `append_whole`; a torn last frame is cut off by `cut_torn_tail`)
      manifest.csv     one line per event (written, relaxed, labeled, failed), for humans

Box files are written atomically (a hidden temporary name in the same directory, then a rename),
so a reader never sees half a file. Names are deterministic, `<run>_step<step>_atom<centre>_
s<sample>.extxyz`, so a restarted run recognises the boxes it already wrote, whatever stage
they reached, and does not write them again.
"""

from __future__ import annotations

import csv
import fcntl
import io
import itertools
import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import ase.io
from ase import Atoms

from ..common.atomic_files import replaced_atomically, write_atomically
from ..common.geometry import check_structure

STAGES = ("pending", "done", "failed")
MANIFEST_COLUMNS = ("when", "box", "event", "source_step", "centre_index",
                    "centre_local_uncertainty", "strategy", "atoms", "core_atoms",
                    "relaxation", "detail")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")


class CorruptBox(ValueError):
    """A queue file that cannot be read as one box with `core_mask` and `source_index`."""


def box_name(run_id: str, step: int, centre: int, sample: int = 0) -> str:
    """File name of one box: deterministic in (run id, source step, centre atom, sample)."""
    if not RUN_ID.match(run_id):
        raise ValueError(f"run_id {run_id!r} must be letters, digits, '.' or '-' (no '_', "
                         "spaces or slashes), starting with a letter or digit")
    return f"{run_id}_step{step:09d}_atom{centre:07d}_s{sample:02d}.extxyz"


def extxyz_text(frames) -> str:
    """The extxyz text of one Atoms or a list of them."""
    buffer = io.StringIO()
    ase.io.write(buffer, frames, format="extxyz")
    return buffer.getvalue()


def append_whole(path: Path, text: str) -> None:
    """Append `text` to `path` whole or not at all.

    The append holds an exclusive lock on the file, so concurrent appenders never interleave;
    it writes until every byte is out (a write may be short) and syncs. If any of that fails
    (a full disk: ENOSPC) or is interrupted, the file is cut back to its size before and the
    error raised. Only a kill in mid-write can leave a torn tail; see `cut_torn_tail`.
    """
    data = memoryview(text.encode())
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        size = os.fstat(descriptor).st_size
        try:
            while data:
                data = data[os.write(descriptor, data):]
            os.fsync(descriptor)
        except BaseException:
            os.ftruncate(descriptor, size)
            raise
    finally:
        os.close(descriptor)


def whole_frames_length(path: Path) -> int:
    """Bytes of extxyz file `path` up to the end of its last whole frame (a count line N, a
    comment line and N atom lines, each ending in a newline).

    Whatever follows is a torn frame: the start of an append cut short by a kill. A count line
    that is not a number of atoms raises ValueError naming the file and the line.
    """
    whole = line_number = 0
    with open(path, "rb") as handle:
        lines = iter(handle)
        for count_line in lines:
            line_number += 1
            try:
                expected = int(count_line) + 1
            except ValueError:
                expected = 0
            if expected < 1:
                raise ValueError(f"'{path}' line {line_number}: expected the atom count of a "
                                 f"frame, found {count_line[:40].decode(errors='replace')!r}")
            body = list(itertools.islice(lines, expected))
            line_number += len(body)
            if len(body) < expected or not body[-1].endswith(b"\n"):
                break
            whole += len(count_line) + sum(map(len, body))
    return whole


def cut_torn_tail(path: Path) -> Path | None:
    """Cut a torn last frame off extxyz file `path`, keeping its bytes in the side file
    `<path>.torn-<UTC time>`, whose path is returned (None if `path` ends with a whole frame).

    The side file is written (and synced) before `path` is shortened, so no byte is ever lost.
    """
    if not path.exists():
        return None
    whole = whole_frames_length(path)
    with open(path, "r+b") as handle:
        handle.seek(whole)
        torn = handle.read()
        if not torn:
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
        side = path.with_name(f"{path.name}.torn-{stamp}")
        with replaced_atomically(side) as temporary, open(temporary, "wb") as kept:
            kept.write(torn)
            kept.flush()
            os.fsync(kept.fileno())
        handle.truncate(whole)
        handle.flush()
        os.fsync(handle.fileno())
    return side


class CandidateQueue:
    """A queue directory (created if needed); see the module docstring for its layout."""

    def __init__(self, root):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"queue '{self.root}' exists and is not a directory")
        for stage in STAGES:
            (self.root / stage).mkdir(parents=True, exist_ok=True)
        self.manifest = self.root / "manifest.csv"
        self.dataset = self.root / "labeled.extxyz"
        try:
            descriptor = os.open(self.manifest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            os.write(descriptor, (",".join(MANIFEST_COLUMNS) + "\n").encode())
            os.close(descriptor)

    def path(self, stage: str, name: str) -> Path:
        return self.root / stage / name

    def stage_of(self, name: str) -> str | None:
        """The stage holding box `name`, or None if the queue has never seen it."""
        for stage in STAGES:
            if self.path(stage, name).exists():
                return stage
        return None

    def boxes(self, stage: str = "pending") -> list[Path]:
        """Box files of one stage, by name (temporary files are not boxes)."""
        return sorted(p for p in (self.root / stage).glob("*.extxyz")
                      if not p.name.startswith("."))

    def source_steps(self, run_id: str) -> list[int]:
        """The source step of every box of run `run_id` in any stage, one entry per box."""
        name = re.compile(rf"{re.escape(run_id)}_step(\d+)_atom")
        return [int(name.match(p.name)[1]) for s in STAGES
                for p in (self.root / s).glob(f"{run_id}_step*.extxyz")]

    def write(self, box: Atoms, name: str, stage: str = "pending", event: str = "written",
              detail: str = "") -> Path:
        """Write `box` atomically into `stage` and log the event in the manifest."""
        path = self.path(stage, name)
        write_atomically(path, extxyz_text(box))
        self.log(name, event, box, detail)
        return path

    def read(self, path: Path) -> Atoms:
        """One box from the queue; CorruptBox names the file and the problem."""
        if not path.is_file():
            raise FileNotFoundError(f"box file '{path}' does not exist")
        try:
            frames = ase.io.read(path, index=":", format="extxyz")
        except Exception as err:
            raise CorruptBox(f"'{path}' is not a readable extxyz box: {err}") from err
        if len(frames) != 1:
            raise CorruptBox(f"'{path}' holds {len(frames)} frames, a box file holds one")
        box = frames[0]
        missing = [k for k in ("core_mask", "source_index") if k not in box.arrays]
        if missing:
            raise CorruptBox(f"'{path}' lacks the per-atom arrays {missing} of a box")
        try:  # (a NaN box, written by hand or before the gates refused them, hung the labeler)
            check_structure(box, f"'{path}'")
        except ValueError as err:
            raise CorruptBox(str(err)) from None
        return box

    def move(self, name: str, box: Atoms, stage: str, event: str, detail: str = "") -> Path:
        """Write the final version of pending box `name` into `stage`, then remove it from pending."""
        path = self.write(box, name, stage, event, detail)
        self.path("pending", name).unlink(missing_ok=True)
        return path

    def log(self, name: str, event: str, box: Atoms | None = None, detail: str = "") -> None:
        """Append one line to the manifest."""
        info = box.info if box is not None else {}
        row = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "box": name,
               "event": event, "detail": detail,
               "atoms": len(box) if box is not None else "",
               "core_atoms": int(box.arrays["core_mask"].sum()) if box is not None else "",
               **{k: info.get(k, "") for k in ("source_step", "centre_index",
                                               "centre_local_uncertainty", "strategy",
                                               "relaxation")}}
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=MANIFEST_COLUMNS, lineterminator="\n").writerow(row)
        append_whole(self.manifest, line.getvalue())

    @contextmanager
    def labeling_lock(self):
        """Hold the queue's labeling lock: a second labeler on the same queue is refused."""
        handle = open(self.root / ".labeling.lock", "w")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"another `mdmonitor label` is already labeling "
                                   f"'{self.root}'; run one labeler per queue") from None
            yield
        finally:
            handle.close()
