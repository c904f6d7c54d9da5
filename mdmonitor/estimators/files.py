"""One .npz file per fitted single-model estimator (LLPR, LTAU, GMM).

The file holds the estimator's arrays, its kind and format version, and a reference to its MACE
model: the path relative to the file where possible, the SHA-256 and the head. It is written
atomically (temporary file, then rename), read without pickle, and refused for another model:
the model file is hashed before it is loaded (a model file is a pickle, loading it runs code).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common.atomic_files import replaced_atomically
from ..common.trusted_pickles import ModelFileChanged
from .mace_model import MaceModel

MODEL_KEYS = ("model_file", "model_sha256", "head")  # how an estimator file names its model
COMMANDS = {"llpr": "mdmonitor fit-llpr", "ltau": "mdmonitor fit-ltau",
            "gmm": "mdmonitor fit-gmm"}


def save_estimator(path: str | Path, kind: str, version: int, model: MaceModel,
                   **arrays) -> None:
    """Write `arrays` with the kind, format version and model reference to `path`."""
    path = Path(path)
    model_file = Path(model.path).resolve()
    try:
        model_ref = str(model_file.relative_to(path.resolve().parent))
    except ValueError:
        model_ref = str(model_file)
    write_npz(path, kind=kind, format_version=version, model_file=model_ref,
              model_sha256=model.sha256(), head=model.head, **arrays)


def write_npz(path: str | Path, **arrays) -> None:
    """Write `arrays` to the .npz file `path` atomically (a hidden temporary file, renamed)."""
    with replaced_atomically(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)


def read_npz(path: str | Path, what: str) -> dict:
    """The arrays of the .npz file `path` (no pickle); errors name it as `what`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    try:
        return dict(np.load(path, allow_pickle=False))
    except Exception as err:
        raise ValueError(f"cannot read {what} '{path}': {err}") from err


def load_estimator(path: str | Path, kind: str, version: int,
                   model: str | Path | None = None) -> tuple[dict, MaceModel]:
    """The arrays of an estimator file of `kind` and its model: found next to the file unless
    `model` is given, and refused unless its SHA-256 is the one the estimator was fitted for."""
    path = Path(path)
    stored = read_npz(path, f"{kind.upper()} file")
    if str(stored.get("kind")) != kind or int(stored.get("format_version", -1)) != version:
        raise ValueError(f"'{path}' is not an mdmonitor {kind.upper()} file (format {version}); "
                         f"it holds kind '{stored.get('kind')}'")
    missing = [key for key in MODEL_KEYS if key not in stored]
    if missing:
        raise ValueError(f"{kind.upper()} file '{path}' lacks the field(s) {', '.join(missing)} "
                         f"that name its model; fit it again with `{COMMANDS[kind]}`")
    if model is None:
        model = path.parent / str(stored["model_file"])
    try:
        model = MaceModel(model, head=str(stored["head"]), sha256=str(stored["model_sha256"]))
    except ModelFileChanged as err:
        raise ValueError(f"'{path}' was fitted for another model than '{err.path}' (SHA-256 "
                         f"{err.found}, fitted for {err.expected}); the model was not loaded; "
                         f"fit it again with `{COMMANDS[kind]}`") from err
    return stored, model

