"""Write cu_slab_start.extxyz, the start structure of cu_slab.toml: the 96-atom Cu(100) slab of
`mdmonitor demo` with one adatom on the top surface and one vacancy in the bottom layer, a
structure the bulk-trained bundled models have not seen.

    python make_start.py
"""

import ase.io
import numpy as np
from ase import Atom

from mdmonitor.demo import demo_slab

slab = demo_slab()
top = slab.positions[slab.get_tags() == 1][0]  # tag 1: the top layer
spacing = np.linalg.norm(slab.cell[0]) / 4  # in-plane nearest-neighbour distance, A
slab.append(Atom("Cu", top + [spacing / 2, spacing / 2, 1.8]))  # a fourfold hollow site
del slab[int(np.flatnonzero(slab.get_tags() == 6)[0])]  # tag 6: the bottom layer
ase.io.write("cu_slab_start.extxyz", slab, format="extxyz")
print(f"wrote cu_slab_start.extxyz: {len(slab)} atoms")
