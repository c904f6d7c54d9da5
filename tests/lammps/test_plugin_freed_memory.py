"""pair_style mdmonitor makes glibc's malloc keep freed memory in the LAMMPS process when it is
created, not when the plugin is loaded, and not with MDMONITOR_KEEP_FREED_MEMORY=0; the log
says so. Each case in a fresh process (the lammps Python module), observed from inside it."""

import os

import pytest

from mdmonitor.common.freed_memory import SWITCH
from mdmonitor.lammps.plugin import build
from tests.lammps_support import exported
from tests.malloc_probe import keeps_freed_memory, probe

NOTE = "malloc keeps freed memory"


@pytest.fixture(scope="module", autouse=True)
def plugin():
    """The plugin of the current sources (an incremental CMake build: quick when up to date)."""
    return build()


def lammps_with(pair_style: str, log) -> str:
    """Python code: a LAMMPS instance with the plugin loaded and `pair_style` given."""
    return f"""
from mpi4py import MPI
from lammps import lammps
from mdmonitor.lammps.plugin import plugin_path
lmp = lammps(cmdargs=["-log", {str(log)!r}, "-screen", "none"])
lmp.commands_string(f'''plugin load {{plugin_path()}}
units metal
atom_style atomic
region cell block 0 10 0 10 0 10
create_box 1 cell
mass 1 63.546
{pair_style}''')
"""


def test_loading_the_plugin_leaves_malloc_alone(tmp_path):
    assert not keeps_freed_memory(probe(lammps_with("pair_style lj/cut 5.0", tmp_path / "log")))


def test_pair_style_keeps_freed_memory_and_says_so(tmp_path):
    found = probe(lammps_with(f"pair_style mdmonitor {exported('llpr')}", tmp_path / "log"))
    assert keeps_freed_memory(found)
    assert NOTE in (tmp_path / "log").read_text()


def test_switch_off_variable_leaves_malloc_alone(tmp_path):
    found = probe(lammps_with(f"pair_style mdmonitor {exported('llpr')}", tmp_path / "log"),
                  env={**os.environ, SWITCH: "0"})
    assert not keeps_freed_memory(found)
    assert "pair_style mdmonitor: llpr estimator" in (tmp_path / "log").read_text()
    assert NOTE not in (tmp_path / "log").read_text()
