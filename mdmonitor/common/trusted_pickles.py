"""A narrow scope in which torch.load may unpickle: for files mdmonitor has reason to trust.

torch >= 2.6 loads with weights_only=True unless told otherwise, and refuses any pickled object
that is not a tensor or a plain container; TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, read by every
torch.load call, turns that off. Loads that need it: e3nn's own constants file, read with a bare
torch.load when `e3nn.o3` is first imported (e3nn 0.4.4, pinned by mace-torch), and MACE model
files (a whole pickled network), whose unpickling imports mace modules; `import mace` and
`import mace.calculators` themselves set the variable for the whole process. Inside
`trusted_pickle_loads()` it is set; afterwards the caller's value (or its absence) is back.
mace's own `MACECalculator` loads model files with a bare torch.load: build it inside the scope.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from .environment import restore_environ, saved_environ

FLAG = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class ModelFileChanged(ValueError):
    """A model file whose SHA-256 is not the one recorded for it (refused before loading)."""

    def __init__(self, path: Path, expected: str, found: str):
        super().__init__(f"MACE model file '{path}' has SHA-256 {found}, not the recorded "
                         f"{expected}: refused without loading it")
        self.path, self.expected, self.found = path, expected, found


@contextmanager
def trusted_pickle_loads():
    """Within the block, torch.load without a weights_only argument unpickles, and torch's
    warning about it is silenced; afterwards the environment variable and the warning filters
    are exactly the caller's again. Unpickling runs code: use it only for trusted files."""
    saved = saved_environ([FLAG])
    os.environ[FLAG] = "1"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=f"Environment variable {FLAG}")
            yield
    finally:
        restore_environ(saved)
