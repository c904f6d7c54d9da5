"""Write what the LAMMPS examples here read, into the current directory: the bundled Cu committee
and LLPR estimators exported for LAMMPS (committee.pt, llpr.pt, as `mdmonitor export-lammps`
writes them) and the 96-atom Cu(100) slab of `mdmonitor demo` (slab.data).

    python prepare.py && lmp -in in.committee.lmp
"""

import ase.io

from mdmonitor import Committee, LastLayerLPR, demo_models
from mdmonitor.demo import demo_slab
from mdmonitor.lammps.export import export

models = demo_models()
export(Committee.from_mace(models["committee"]), "committee.pt")
export(LastLayerLPR.load(models["llpr"]), "llpr.pt")
ase.io.write("slab.data", demo_slab(), format="lammps-data", specorder=["Cu"], masses=True)
print("wrote committee.pt, llpr.pt, slab.data")
