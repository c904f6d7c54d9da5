"""A fitted single-model estimator (LLPR, LTAU or GMM) read back from its .npz file by kind.

"llpr-forces" is an LLPR file whose target is the forces (`learn`'s name for it): the file
itself says which target it has."""

from __future__ import annotations

from pathlib import Path

from .gmm import LatentGMM
from .llpr import LastLayerLPR
from .ltau import LTAU

KINDS = {"llpr": LastLayerLPR, "llpr-forces": LastLayerLPR, "ltau": LTAU, "gmm": LatentGMM}


def load_fitted(kind: str, path: str | Path, model: str | Path | None = None):
    """The single-model estimator of `kind` ("llpr", "llpr-forces", "ltau" or "gmm") at `path`, for
    `model` if given (else the model next to the file)."""
    return KINDS[kind].load(path, model=model)
