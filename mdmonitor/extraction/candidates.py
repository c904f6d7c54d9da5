"""The candidate queue: a directory of cut boxes waiting for (or done with) ab-initio labels.

    queue/
      pending/   boxes to label, one extxyz file each
      done/      labeled boxes (labels under REF_energy, REF_forces, REF_stress)
      failed/    boxes that failed a quality gate or labeling; info["failure"] says why
      skipped/   boxes a selection (`mdmonitor select`) left out; the manifest says why
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
import io
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import ase.io
from ase import Atoms

from ..common.atomic_files import append_whole, write_atomically
from ..common.geometry import check_structure

STAGES = ("pending", "done", "failed", "skipped")
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


def read_box(path: Path) -> Atoms:
    """One box from the queue; CorruptBox names the file and the problem."""
    path = Path(path)
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

    read = staticmethod(read_box)

    def move(self, name: str, box: Atoms, stage: str, event: str, detail: str = "") -> Path:
        """Write the final version of pending box `name` into `stage`, then remove it from pending."""
        path = self.write(box, name, stage, event, detail)
        self.path("pending", name).unlink(missing_ok=True)
        return path

    def move_unchanged(self, name: str, stage: str, event: str, box: Atoms | None = None,
                       detail: str = "") -> Path:
        """Move pending box file `name` as it is (one rename) into `stage`; log the event."""
        path = self.path(stage, name)
        os.replace(self.path("pending", name), path)
        self.log(name, event, box, detail)
        return path

    def requeue(self, name: str, detail: str = "") -> Path:
        """Move failed box file `name` back to pending/ as it is (one rename), to be labeled
        again (its info["failure"] makes the labeler count its attempts afresh)."""
        path = self.path("pending", name)
        os.replace(self.path("failed", name), path)
        self.log(name, "requeued", detail=detail)
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
