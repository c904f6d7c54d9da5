"""Host-embedded boxes against cubes around a surface adatom and a vacancy (Chong et al. 2024,
Sec. 4.2, HS embedding; the cube of Heid et al. 2024 as used in the active-learning study).

Source: the Cu(100) slab with an adatom and a vacancy that `mdmonitor learn`'s example starts
from (examples/learn/cu_slab_start.extxyz, 96 atoms). Centres: the adatom, a subsurface atom
next to the vacancy, a clean top-surface atom far from the adatom. For each centre:
  - cube: 8 A cube, core radius 3.5 A, border relaxed with the bundled committee (the settings
    of scripts/active_learning_study.py);
  - host: the same 3.5 A environment embedded in fcc Cu (ASE's orthorhombic cell, registered
    with the slab), buffer noise 0.2 A, 3 samples, margin 3.5 A (the default) and 1.0 A; and,
    added after the first run, a 6 A environment (beyond EMT's 5.4-5.9 A cutoff), margin 1 A.
Measured: atoms per box; the committee-mean energy error against EMT per atom (meV/atom, the
figure that was -320 to -430 meV/atom on the study's cubes); and how well the box reproduces the
reference's view of the centre: |F_EMT(centre, box) - F_EMT(centre, frame)| (meV/A), and the
committee's force error on the centre in the box next to the same in the frame (meV/A).

The goal, stated before running: on host boxes the per-atom energy error is within 3x the
model's error on the whole source frame (the cube's is 100x off), and the EMT force on the
centre atom is reproduced to better than on the cube. (The cube's figure in parentheses was
the expectation; the frame itself turned out to be -150 meV/atom off.) Outcome: the first part
held, the second was missed with a 3.5 A environment (see docs/notes/host_embedding.md).

    .venv/bin/python scripts/host_embedding_study.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.neighborlist import neighbor_list  # noqa: E402

from mdmonitor.bundled_models import demo_models  # noqa: E402
from mdmonitor.estimators.committee import Committee  # noqa: E402
from mdmonitor.extraction.extractor import Extractor  # noqa: E402
from mdmonitor.extraction.relaxation import ForceFieldCalculator, relax_border  # noqa: E402

START = Path(__file__).resolve().parents[1] / "examples" / "learn" / "cu_slab_start.extxyz"
CORE = 3.5  # A, as in the active-learning study
SAMPLES = 3
HOSTS = ((CORE, 3.5), (CORE, 1.0), (6.0, 1.0))  # (core radius, margin), A


def centres(slab) -> dict:
    """The adatom, a subsurface atom next to the bottom vacancy, a top atom far from the adatom."""
    coordination = np.bincount(neighbor_list("i", slab, 3.0), minlength=len(slab))
    tags = slab.get_tags()
    adatom = int(np.argmax(slab.positions[:, 2]))
    subsurface = np.flatnonzero(tags == 5)
    next_to_vacancy = int(subsurface[np.argmin(coordination[subsurface])])
    top = np.flatnonzero(tags == 1)
    far = int(top[np.argmax(slab.get_distances(adatom, top, mic=True))])
    return {"adatom": adatom, "vacancy neighbour": next_to_vacancy, "top surface": far}


def errors(box, committee, source, centre_in_source) -> dict:
    """Energy error per atom (meV/atom) and centre-atom force figures (meV/A) of one box."""
    model = committee.predict(box)
    reference = box.copy()
    reference.calc = EMT()
    f_emt = reference.get_forces()[0]
    return {"atoms": len(box),
            "energy": 1000 * (model.energy - reference.get_potential_energy()) / len(box),
            "centre_emt_shift": 1000 * np.linalg.norm(f_emt - source["emt"][centre_in_source]),
            "centre_model_error": 1000 * np.linalg.norm(model.forces[0] - f_emt)}


def main() -> None:
    slab = ase.io.read(START)
    committee = Committee.from_mace(demo_models()["committee"])
    model_frame = committee.predict(slab)
    frame = slab.copy()
    frame.calc = EMT()
    source = {"emt": frame.get_forces()}
    frame_energy = 1000 * (model_frame.energy - frame.get_potential_energy()) / len(slab)
    print(f"whole frame ({len(slab)} atoms): committee energy error {frame_energy:+.1f} meV/atom")
    relaxer = ForceFieldCalculator(committee)
    unused = tempfile.mkdtemp()  # the extractors' queue: only their `cut` is used here
    cube = Extractor("cube", queue=unused, core_radius=CORE, box_length=8.0)
    hosts = {(core, margin): Extractor("host", queue=unused, core_radius=core, host="fcc",
                                       host_margin=margin, n_samples=SAMPLES, seed=0)
             for core, margin in HOSTS}
    print("| centre | box | atoms | energy error (meV/atom) | EMT centre force shift vs frame "
          "(meV/A) | committee centre force error, box / frame (meV/A) |")
    print("|---|---|---|---|---|---|")
    for name, centre in centres(slab).items():
        frame_error = 1000 * np.linalg.norm(model_frame.forces[centre] - source["emt"][centre])
        box = cube.cut(slab, centre)
        relax_border(box, relaxer)
        found = errors(box, committee, source, centre)
        print(f"| {name} | cube 8 A, relaxed | {found['atoms']} | {found['energy']:+.1f} "
                    f"| {found['centre_emt_shift']:.0f} | {found['centre_model_error']:.0f} / "
                    f"{frame_error:.0f} |", flush=True)
        for (core, margin), host in hosts.items():
            found = [errors(host.cut(slab, centre, sample), committee, source, centre)
                     for sample in range(SAMPLES)]
            mean = {k: np.mean([f[k] for f in found]) for k in found[0]}
            print(f"| {name} | host fcc, core {core} A, margin {margin} A, {SAMPLES} samples | "
                        f"{mean['atoms']:.0f} | {mean['energy']:+.1f} | "
                        f"{mean['centre_emt_shift']:.0f} | {mean['centre_model_error']:.0f} / "
                        f"{frame_error:.0f} |", flush=True)


if __name__ == "__main__":
    main()
