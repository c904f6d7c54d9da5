"""High-symmetry (host) embedding: a local environment inserted into a periodic host crystal.

Chong et al. 2024 (seed 000, Sec. 4.2, "HS embedding"): the spherical environment of an
uncertain atom is taken out of its frame and embedded into a crystal, so that a defect or a
surface site is labeled inside a crystal rather than in vacuum or in a cut cube. The box is the
host repeated until every face-to-face height holds the environment's diameter plus a margin
(default the core radius, i.e. the model cutoff), the centre on a host site in the middle of the
cell; host atoms inside the environment's sphere, or closer to an environment atom than
OVERLAP_FACTOR x the sum of their covalent radii, are removed (a sphere of vacuum in the
environment, at a surface, stays vacuum). Host atoms within the margin of the sphere are buffer
atoms, displaced by Gaussian noise; the environment is kept exactly. The host's lattice is not
rotated to the environment's: a host in the source crystal's orientation fills the sphere's
surroundings site for site, a misoriented one leaves a looser interface (info
`host_misfit_removed` counts the host atoms removed for overlapping outside the sphere).

Box arrays as for every strategy (see `cutting`): core_mask True for the environment, whose
source_index/source_image give each atom's source; host atoms have core_mask False,
source_index -1 (HOST_ATOM) and source_image (0, 0, 0).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, chemical_symbols, covalent_radii, reference_states
from ase.neighborlist import neighbor_list

from ..common.geometry import check_structure
from .cutting import cell_heights, check_box_size, surroundings

HOST_STRUCTURES = ("fcc", "bcc", "hcp", "diamond", "sc")  # single-element ase.build.bulk cells
OVERLAP_FACTOR = 0.8  # host atom removed when closer to the environment than 0.8 x covalent sum
HOST_ATOM = -1  # source_index of a host atom


def check_host(host) -> None:
    """ValueError unless `host` is a name of HOST_STRUCTURES or a periodic, non-empty Atoms."""
    if isinstance(host, str):
        if host not in HOST_STRUCTURES:
            raise ValueError(f"host {host!r} is not a crystal structure mdmonitor builds (one of "
                             f"{', '.join(HOST_STRUCTURES)}); give one of them or an ASE Atoms "
                             "of a periodic crystal")
        return
    if not isinstance(host, Atoms):
        raise ValueError(f"host must be an ASE Atoms of a periodic crystal or one of "
                         f"{', '.join(HOST_STRUCTURES)}, got {type(host).__name__}")
    if not len(host):
        raise ValueError("host crystal has no atoms")
    if not host.pbc.all():
        raise ValueError(f"host crystal must be periodic along all three axes, got pbc="
                         f"{host.pbc.tolist()}: give a bulk crystal, e.g. "
                         "ase.build.bulk('Cu', 'fcc', a=3.61)")
    check_structure(host, "host crystal")


def host_cells(host, numbers: np.ndarray, lattice_constant: float | None = None) -> list:
    """The host cells to try for an environment of atomic `numbers`: [host] for an Atoms; for a
    structure name, ase.build.bulk of the environment's most common element, with
    `lattice_constant` (A) or ASE's reference one, in its orthorhombic cell (for fcc, x and y
    along <110>, as in ase.build.fcc100 slabs) and, where one exists, its cubic cell (axes along
    <100>, as in bulk(..., cubic=True) frames)."""
    check_host(host)
    if isinstance(host, Atoms):
        return [host]
    symbol = chemical_symbols[int(np.argmax(np.bincount(numbers)))]
    reference = reference_states[atomic_numbers[symbol]] or {}
    if lattice_constant is None and reference.get("symmetry") != host:
        raise ValueError(f"ASE has no reference lattice constant for {host} {symbol} (its "
                         f"reference structure is {reference.get('symmetry')}): give "
                         "host_lattice_constant (A)")
    cells = [bulk(symbol, host, a=lattice_constant, orthorhombic=True)]
    if host != "hcp":
        cubic = bulk(symbol, host, a=lattice_constant, cubic=True)
        if not np.allclose(cubic.cell, cells[0].cell):
            cells.append(cubic)
    return cells


def _host_around(numbers: np.ndarray, displacement: np.ndarray, host: Atoms,
                 core_radius: float, margin: float) -> tuple[Atoms, int, np.ndarray]:
    """Environment atoms (`numbers` at `displacement` A from the centre, the centre first) in
    the middle of `host` repeated to heights of 2 x core_radius + margin, the centre on a host
    site of its element; host atoms inside the sphere or overlapping the environment removed.
    Returns the box (environment first), how many host atoms were removed for overlapping
    outside the sphere (0 when the host's lattice is registered with the environment's), and
    the repetition."""
    repeat = np.ceil((2 * core_radius + margin) / cell_heights(host) - 1e-9).astype(int)
    crystal = host.repeat(repeat)
    crystal.wrap()
    middle = 0.5 * crystal.cell.sum(axis=0)
    sites = np.flatnonzero(crystal.numbers == numbers[0])
    sites = sites if len(sites) else np.arange(len(crystal))
    site = sites[np.argmin(np.linalg.norm(crystal.positions[sites] - middle, axis=1))]
    crystal.positions += middle - crystal.positions[site]
    crystal.wrap()
    box = Atoms(numbers=np.concatenate([numbers, crystal.numbers]),
                positions=np.vstack([middle + displacement, crystal.positions]),
                cell=crystal.cell, pbc=True)
    widest = OVERLAP_FACTOR * (covalent_radii[numbers].max() + covalent_radii[host.numbers].max())
    i, j, d = neighbor_list("ijd", box, max(core_radius, widest))
    pair = (i < len(numbers)) & (j >= len(numbers))
    i, j, d = i[pair], j[pair], d[pair]
    inside = np.unique(j[(i == 0) & (d <= core_radius)])
    overlapping = np.unique(j[d < OVERLAP_FACTOR * (covalent_radii[box.numbers[i]]
                                                    + covalent_radii[box.numbers[j]])])
    removed = np.union1d(inside, overlapping)
    return box[np.setdiff1d(np.arange(len(box)), removed)], len(removed) - len(inside), repeat


def embed_in_host(atoms: Atoms, centre: int, core_radius: float, host,
                  rng: np.random.Generator, noise: float = 0.2, margin: float | None = None,
                  foreign_host: bool = False, lattice_constant: float | None = None) -> Atoms:
    """The environment within `core_radius` (A) of atom `centre` of `atoms`, embedded in `host`.

    host: a periodic crystal, or a structure name built with `lattice_constant` (see
    `host_cells`: of its cells, the one whose lattice fits the environment best, i.e. the
    fewest host atoms removed for overlapping it), repeated until its heights reach
    2 x core_radius + margin (A, default core_radius). Host atoms within core_radius + margin
    of the centre are displaced by Gaussian noise of `noise` A. ValueError if the host holds an
    element the environment does not, unless foreign_host.
    """
    check_box_size(atoms, 2 * core_radius, f"core_radius {core_radius:g} A")
    margin = core_radius if margin is None else margin
    environment = surroundings(atoms, centre, core_radius)
    numbers = atoms.numbers[environment.index]
    cells = host_cells(host, numbers, lattice_constant)
    foreign = sorted(set(cells[0].get_chemical_symbols()) - set(chemical_symbols[z]
                                                                for z in numbers))
    if foreign and not foreign_host:
        raise ValueError(f"host crystal {cells[0].get_chemical_formula()} holds "
                         f"{', '.join(foreign)}, which the environment of atom {centre} "
                         f"({atoms[environment.index].get_chemical_formula()}) does not: give "
                         "a host of the environment's elements, or foreign_host=True if an "
                         "environment in a crystal of other elements is meant")
    tried = [(_host_around(numbers, environment.displacement, cell, core_radius, margin), cell)
             for cell in cells]
    (box, misfit, repeat), host = min(tried, key=lambda t: t[0][1])

    host_atoms = np.arange(len(box)) >= len(numbers)
    from_centre = box.get_distances(0, np.arange(len(box)), mic=True)
    buffer = host_atoms & (from_centre <= core_radius + margin)
    box.positions[buffer] += rng.normal(scale=noise, size=(int(buffer.sum()), 3))
    box.arrays["core_mask"] = ~host_atoms
    box.arrays["source_index"] = np.concatenate(
        [environment.index, np.full(int(host_atoms.sum()), HOST_ATOM)]).astype(int)
    box.arrays["source_image"] = np.vstack(
        [environment.image, np.zeros((int(host_atoms.sum()), 3))]).astype(int)
    box.info.update(host=host.get_chemical_formula(), host_cell=host.cell.cellpar().round(6),
                    host_repeat="x".join(map(str, repeat)), host_atoms=int(host_atoms.sum()),
                    host_misfit_removed=misfit, buffer_atoms=int(buffer.sum()),
                    host_margin=float(margin))
    return box
