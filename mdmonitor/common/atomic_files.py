"""Files written atomically: a hidden temporary file beside the target, renamed over it when
complete, so a reader (or a restarted run) sees the old file or the whole new one, never part."""

from __future__ import annotations

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
