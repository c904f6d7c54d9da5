"""Files written atomically: a hidden temporary file beside the target, renamed over it when
complete, so a reader (or a restarted run) sees the old file or the whole new one, never part."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_atomically(path: str | Path):
    """A temporary path to write in the block; renamed to `path` if the block succeeds, removed
    if it fails. It keeps the suffix of `path`. An OS error that names no file (a full disk
    fails the write or the flush) is raised again naming `path`."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: str | Path, text: str) -> None:
    """Write `text` to `path` so that `path` is either absent or complete, never partial."""
    with replaced_atomically(path) as temporary, open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def append_or_cut_back(descriptor: int, data: bytes) -> None:
    """Append all of `data` to a file opened for appending (by a caller holding its lock), and
    sync; a write may be short (a signal, a nearly full disk), so it writes until every byte is
    out. If any of that fails (a full disk: ENOSPC) or is interrupted, the file is cut back to
    its size before and the error raised; only a kill in mid-write can leave a torn tail."""
    size = os.fstat(descriptor).st_size
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(descriptor, view):]
        os.fsync(descriptor)
    except BaseException:
        os.ftruncate(descriptor, size)
        raise


def append_whole(path: str | Path, text: str) -> None:
    """Append `text` to `path` whole or not at all, holding an exclusive lock on the file so
    that concurrent appenders never interleave (see `append_or_cut_back`)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        append_or_cut_back(descriptor, text.encode())
    finally:
        os.close(descriptor)
