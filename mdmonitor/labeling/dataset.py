"""The labeled dataset of a queue, `labeled.extxyz`: every labeled box once, whole, in the order
labelers finished them, ready for MACE training.

Any number of labelers (processes, on one host or several sharing the filesystem) append to it.
Each append holds an exclusive lock on the file, so frames never interleave; under that lock
the appender first reads whatever others appended since it last looked (the box names it
holds) and repairs a torn tail, so a box already in the dataset is never appended again and a
frame is never written after half of another. A tail is torn only by a kill in mid-append: every
live appender completes its frame before it releases the lock.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from ..common.atomic_files import append_or_cut_back, replaced_atomically

BOX_KEY = re.compile(rb"(?:^|\s)box=(\S+)")


def scan_frames(handle, start: int = 0, name: str | None = None) -> tuple[int, list[str]]:
    """Read extxyz file `name` open in binary mode from byte `start` (a frame boundary): the byte
    offset of the end of its last whole frame, and the `box` names of the whole frames read.

    A frame is a count line N, a comment line and N atom lines, each ending in a newline;
    whatever follows the last whole one is a torn frame. A count line that is not a number of
    atoms raises ValueError naming the file and the line.
    """
    handle.seek(start)
    whole, names, line_number = start, [], 0
    lines = iter(handle)
    for count_line in lines:
        line_number += 1
        try:
            expected = int(count_line) + 1
        except ValueError:
            expected = 0
        if expected < 1:
            where = f"line {line_number}" + (f" after byte {start}" if start else "")
            raise ValueError(f"'{name or handle.name}' {where}: expected the atom count of a frame, "
                             f"found {count_line[:40].decode(errors='replace')!r}")
        body = list(itertools.islice(lines, expected))
        line_number += len(body)
        if len(body) < expected or not body[-1].endswith(b"\n"):
            break
        whole += len(count_line) + sum(map(len, body))
        match = BOX_KEY.search(body[0])
        if match:
            names.append(match[1].decode())
    return whole, names


def whole_frames_length(path: Path) -> int:
    """Bytes of extxyz file `path` up to the end of its last whole frame (see `scan_frames`)."""
    with open(path, "rb") as handle:
        return scan_frames(handle)[0]


def keep_torn_bytes(path: Path, torn: bytes) -> Path:
    """Write the bytes of a torn frame of `path` to the side file `<path>.torn-<UTC time>`
    (synced before the caller shortens `path`, so no byte is ever lost) and return it."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
    side = path.with_name(f"{path.name}.torn-{stamp}")
    with replaced_atomically(side) as temporary, open(temporary, "wb") as kept:
        kept.write(torn)
        kept.flush()
        os.fsync(kept.fileno())
    return side


class LabeledDataset:
    """`labeled.extxyz` as one labeler sees it: the box names it holds, read incrementally."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.names: set[str] = set()
        self._read_up_to = 0  # bytes of whole frames whose names are in self.names
        self.torn_kept: list[Path] = []  # side files of torn frames this labeler cut off

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def refresh(self) -> None:
        """Read what others appended since the last look, and repair a torn tail."""
        self._locked(lambda descriptor: None)

    def append(self, name: str, text: str) -> bool:
        """Append the extxyz `text` of box `name` whole, unless the dataset already holds the
        box (appended by another labeler, or by this one before a kill): True if appended.

        The append is all or nothing: if a write fails (a full disk) or is interrupted, the
        file is cut back to its size before and the error raised.
        """
        def write(descriptor: int) -> bool:
            if name in self.names:
                return False
            append_or_cut_back(descriptor, text.encode())
            self._read_up_to = os.fstat(descriptor).st_size
            self.names.add(name)
            return True

        return self._locked(write)

    def _locked(self, then):
        """Under the dataset's lock: catch up with others' frames, cut a torn tail, then `then`."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            with open(descriptor, "rb", closefd=False) as handle:
                if os.fstat(descriptor).st_size < self._read_up_to:  # replaced by someone
                    self.names, self._read_up_to = set(), 0
                whole, names = scan_frames(handle, self._read_up_to, str(self.path))
                self.names.update(names)
                self._read_up_to = whole
                handle.seek(whole)
                torn = handle.read()
            if torn:
                self.torn_kept.append(keep_torn_bytes(self.path, torn))
                os.ftruncate(descriptor, whole)
                os.fsync(descriptor)
            return then(descriptor)
        finally:
            os.close(descriptor)
