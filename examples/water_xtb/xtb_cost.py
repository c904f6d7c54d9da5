"""Wall time of one xTB energy + forces + stress call on periodic water boxes of 60, 81, 99 atoms.

    OMP_NUM_THREADS=1 .venv/bin/python examples/water_xtb/xtb_cost.py [--method GFN2-xTB]

Each box (20, 27, 33 waters at 1 g/cm3, packed as in run.py) is rattled by 0.02 A four times
and each copy evaluated by a new calculator; the first call is a warm-up, the median of the
other three is reported. Run it with OMP_NUM_THREADS set to the threads you mean to measure.
"""

import argparse
import os
import time

import numpy as np
from run import water_box
from tblite.ase import TBLite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="GFN2-xTB", help="GFN1-xTB or GFN2-xTB")
    args = parser.parse_args()
    print(f"{args.method}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    for n_molecules in (20, 27, 33):
        box = water_box(n_molecules, 1.0, np.random.default_rng(1))
        seconds = []
        for copy in range(4):
            atoms = box.copy()
            atoms.rattle(0.02, seed=copy)
            atoms.calc = TBLite(method=args.method, verbosity=0)
            start = time.perf_counter()
            atoms.get_forces()
            atoms.get_stress()
            seconds.append(time.perf_counter() - start)
        print(f"  {len(box):3d} atoms ({box.cell.lengths()[0]:.2f} A cube): "
              f"{np.median(seconds[1:]):.2f} s per call (calls: "
              + ", ".join(f"{s:.2f}" for s in seconds) + " s)", flush=True)


if __name__ == "__main__":
    main()
