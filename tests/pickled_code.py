"""A stand-in for a malicious pickle (unpickling it creates a marker directory), and the hash
model files are recorded by."""

import hashlib
import os
from pathlib import Path

import torch


class CreatesFile:
    """Pickled, it calls os.mkdir(path) when unpickled: a harmless trace of code running."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def save_code_pickle(path: Path, marker: Path, wrap=lambda obj: obj) -> Path:
    """Write a torch file at `path` whose unpickling creates `marker` (`wrap` nests it)."""
    torch.save(wrap(CreatesFile(marker)), path)
    return path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, as model files are recorded."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
