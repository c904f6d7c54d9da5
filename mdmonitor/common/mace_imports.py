"""mace and e3nn as mdmonitor uses them, imported inside `trusted_pickle_loads()`.

e3nn 0.4.4 (pinned by mace-torch) reads its constants with a bare torch.load when `e3nn.o3` is
first imported, which torch >= 2.6 refuses; and `import mace` sets
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the whole process. Every mdmonitor module takes mace and
e3nn from here, so that the first import happens inside the scope whichever module a program
imports first, and the program's environment and warning filters are its own again afterwards.
"""

import io
from contextlib import redirect_stdout

import torch  # noqa: F401  (imported first, outside the scope: its warning filters stay)

from .trusted_pickles import trusted_pickle_loads

# (stdout: mace prints "cuequivariance ... not available" when imported, to every command and
# script, about an optional GPU accelerator that mdmonitor does not use)
with trusted_pickle_loads(), redirect_stdout(io.StringIO()):
    from e3nn import o3
    from e3nn.util import jit
    from mace import data as mace_data
    from mace.modules.utils import compute_forces_virials
    from mace.tools import torch_geometric, torch_tools, utils

compile_mode = jit.compile_mode

__all__ = ["compile_mode", "compute_forces_virials", "jit", "mace_data", "o3", "torch_geometric", "torch_tools", "utils"]
