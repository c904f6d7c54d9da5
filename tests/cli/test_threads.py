"""`mdmonitor --threads N`: the threads of every command's own process (default 1), and of the
LAMMPS ranks `learn` starts; each case runs the CLI in a fresh process, as a user would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
# the CLI's main with one command's work replaced by a report of this process's threads
HOOK = """
import os, sys
from mdmonitor import cli
from mdmonitor.cli import {module}

def report(args):
    loaded = "torch" in sys.modules
    import torch  # (as the command's work would, or its plugin's libtorch)
    print(loaded, torch.get_num_threads(), os.environ["OMP_NUM_THREADS"])
    return 0

{module}.{function} = report
sys.exit(cli.main(sys.argv[1:]))
"""


def threads_seen(module: str, function: str, *argv: str, omp: str = "3") -> list[str]:
    """What the command's process reports: whether torch was loaded before its work, torch's
    threads and OMP_NUM_THREADS (started with OMP_NUM_THREADS=`omp`, so that torch's own default
    is not 1, and MKL_NUM_THREADS=1, as a shell or a Dask nanny's parent may have it)."""
    env = {**os.environ, "OMP_NUM_THREADS": omp, "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", HOOK.format(module=module, function=function),
                           *argv], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


MD = ("monitoring", "_md", "md", "start.extxyz", "--llpr", "llpr.npz")


def test_threads_option_sets_torch_threads_of_the_command_process():
    module, function, *command = MD
    assert threads_seen(module, function, "--threads", "2", *command)[1:] == ["2", "2"]


def test_commands_run_on_one_thread_by_default():
    module, function, *command = MD
    assert threads_seen(module, function, *command)[1:] == ["1", "1"]
    assert threads_seen("sampling", "_adversarial", "adversarial", "start.extxyz", "--llpr",
                        "llpr.npz")[1:] == ["1", "1"]


def test_lammps_command_gives_its_threads_to_the_plugin_without_loading_torch_first():
    assert threads_seen("lammps", "_lammps", "--threads", "2", "lammps", "in.lmp") == [
        "False", "2", "2"]


def test_label_command_starts_without_torch_and_gives_it_its_threads():
    assert threads_seen("labeling", "_label", "--threads", "2", "label", "queue",
                        "--reference", "ase.calculators.emt:EMT") == [
        "False", "2", "2"]


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_threads_below_one_is_a_usage_error(bad, capsys):
    from mdmonitor.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--threads", bad, "md", "start.extxyz", "--llpr", "llpr.npz"])
    assert done.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_learn_gives_lammps_ranks_the_threads_of_its_process(monkeypatch):
    from mdmonitor.learn.dynamics import rank_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what `mdmonitor --threads 2 learn` sets
    assert rank_threads() == "2"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert rank_threads() == "1"
