"""glibc's malloc keeps freed memory only where mdmonitor says it sets it: after an explicit
keep_freed_memory() and in `mdmonitor md`, `learn` and `adversarial`, not on import or in a MonitoredCalculator, and never
with MDMONITOR_KEEP_FREED_MEMORY=0. Each case in a fresh process, observed from inside it."""

import os

import ase.io
from ase.build import bulk

from mdmonitor.common.freed_memory import SWITCH
from tests.malloc_probe import keeps_freed_memory, probe

SWITCHED_OFF = {**os.environ, SWITCH: "0"}


def test_glibc_default_mmaps_a_large_block_afresh_each_time():
    """The probe tells glibc's default (the baseline of the other tests) from the setting."""
    assert not keeps_freed_memory(probe("pass"))


def test_importing_mdmonitor_and_monitoring_a_force_call_leave_malloc_alone():
    setup = """
import torch
torch.set_num_threads(1)
from ase.build import bulk
import mdmonitor
from mdmonitor import LastLayerLPR, MonitoredCalculator, demo_models
atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
atoms.calc = MonitoredCalculator(LastLayerLPR.load(demo_models()["llpr"]), cutoff=4.0)
atoms.get_forces()
"""
    assert not keeps_freed_memory(probe(setup))


def test_keep_freed_memory_sets_it_for_the_process():
    found = probe("from mdmonitor.common.freed_memory import keep_freed_memory\n"
                  "print('set:', keep_freed_memory())")
    assert "set: True" in found["stdout"]
    assert keeps_freed_memory(found)


def test_switch_off_variable_makes_keep_freed_memory_a_no_op():
    found = probe("from mdmonitor.common.freed_memory import keep_freed_memory\n"
                  "print('set:', keep_freed_memory())", env=SWITCHED_OFF)
    assert "set: False" in found["stdout"]
    assert not keeps_freed_memory(found)


def md_command(directory) -> str:
    """Python code running `mdmonitor md` for 2 steps of 4-atom Cu with the bundled LLPR."""
    structure = directory / "start.extxyz"
    ase.io.write(structure, bulk("Cu", "fcc", a=3.61, cubic=True))
    arguments = [str(structure), "--llpr", "DEMO_LLPR", "--steps", "2", "--log",
                 str(directory / "monitor.csv"), "--trajectory", str(directory / "md.extxyz")]
    return f"""
import torch
torch.set_num_threads(1)
from mdmonitor import demo_models
from mdmonitor.cli import main
arguments = {arguments!r}
arguments[arguments.index("DEMO_LLPR")] = demo_models()["llpr"]
print("exit:", main(["md", *arguments]))
"""


def test_md_command_keeps_freed_memory(tmp_path):
    found = probe(md_command(tmp_path))
    assert "exit: 0" in found["stdout"]
    assert keeps_freed_memory(found)



def test_adversarial_command_keeps_freed_memory(tmp_path):
    structure = tmp_path / "start.extxyz"
    ase.io.write(structure, bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2))
    found = probe(f"""
import torch
torch.set_num_threads(1)
from mdmonitor import demo_models
from mdmonitor.cli import main
print("exit:", main(["adversarial", {str(structure)!r}, "--llpr", demo_models()["llpr"],
                     "-n", "1", "--queue", {str(tmp_path / "queue")!r}]))
""")
    assert "exit: 0" in found["stdout"]
    assert keeps_freed_memory(found)


def test_learn_command_keeps_freed_memory_once_its_config_is_checked(tmp_path):
    config = tmp_path / "learn.toml"
    config.write_text("[run]\ngenerations = 1\n[md]\nstart = 'missing.extxyz'\nthreshold = 0.1\n")
    refused = probe(f"""
from mdmonitor.cli import main
print("exit:", main(["learn", {str(config)!r}]))
""")
    assert "exit: 0" not in refused["stdout"] and not keeps_freed_memory(refused)
    ase.io.write(tmp_path / "missing.extxyz", bulk("Cu", "fcc", a=3.61, cubic=True))
    checked = probe(f"""
from mdmonitor.learn import loop
loop.ActiveLearning.run = lambda self: []  # the config is checked; no generation runs
from mdmonitor.cli import main
print("exit:", main(["learn", {str(config)!r}]))
""")
    assert "exit: 0" in checked["stdout"] and keeps_freed_memory(checked)
