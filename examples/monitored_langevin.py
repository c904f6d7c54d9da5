"""Monitored Langevin MD of a Cu slab with the bundled committee, stopped if it leaves its domain.

    .venv/bin/python examples/monitored_langevin.py

Writes monitor.csv; prints the atoms above the threshold whenever a frame crosses it. The
Langevin noise is seeded, so a rerun gives the same frames.
"""

import numpy as np
from ase import units
from ase.build import fcc100
from ase.md.langevin import Langevin

from mdmonitor import Committee, MonitoredCalculator, UncertaintyLimitExceeded, demo_models


def report(trigger):
    print(f"step {trigger.step}: {len(trigger.indices)} atoms above threshold, most uncertain "
          f"atom {trigger.indices[0]} at {trigger.local_uncertainty[trigger.indices[0]]:.3f} eV/A")


atoms = fcc100("Cu", size=(4, 4, 6), a=3.61, vacuum=8.0, periodic=True)
uq = Committee.from_mace(demo_models()["committee"])
atoms.calc = MonitoredCalculator(uq, cutoff=4.0, threshold=0.03, stop_threshold=0.2,
                                 interval=10, log="monitor.csv", timestep=2 * units.fs,
                                 callbacks=[report])
dyn = Langevin(atoms, 2 * units.fs, temperature_K=600, friction=0.01 / units.fs, fixcm=False,
               rng=np.random.default_rng(0))
try:
    dyn.run(100)
except UncertaintyLimitExceeded as stop:
    print(f"stopped: {stop}")
