"""Cutting a small box around one atom of a frame: periodic cube, periodic embedding, cluster.

Every box is an ASE `Atoms` with arrays `core_mask` (atoms kept exactly at the source's relative
geometry), `source_index` (atom of the source frame) and `source_image` (its periodic image,
integer cell vector), so that each box atom is `source.positions[i] + image @ source.cell`
shifted by one common translation. The centre is atom 0 of every box. Procedures: Heid et al.
2024 (seed 002, Methods B) for the cube, Chong et al. (seed 000, Sec. 4.2) for periodic
embedding and cluster carving.

A box may span at most MAX_SOURCE_COPIES = 8 copies of the source's periodic cell (a cube twice
the cell's height along every periodic axis): a larger one holds every source atom several
times over, costs more to label than the whole frame, and took minutes and gigabytes to gather.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list

from ..common.geometry import BOND_FACTOR, check_structure
from .box_quality import closest_contact, contact_limit

CLUSTER_VACUUM = 6.0  # A of vacuum around a carved cluster, so that its cell is a valid box
MAX_SOURCE_COPIES = 8  # copies of the source's periodic cell a box may span (2 x 2 x 2)


@dataclass
class Surroundings:
    """Atoms (all periodic images) within some radius of a centre atom, nearest first.

    index: (n,) source atom; image: (n, 3) integer cell vector; displacement: (n, 3) A from the
    centre; distance: (n,) A.
    """

    index: np.ndarray
    image: np.ndarray
    displacement: np.ndarray
    distance: np.ndarray

    def take(self, selection) -> "Surroundings":
        return Surroundings(self.index[selection], self.image[selection],
                            self.displacement[selection], self.distance[selection])


def cell_heights(atoms: Atoms) -> np.ndarray:
    """Face-to-face heights (A) of the (completed) cell of `atoms`: the plane spacings 1/|b_k|."""
    return 1.0 / np.linalg.norm(np.linalg.inv(atoms.cell.complete()), axis=0)


def check_box_size(atoms: Atoms, extent: float, setting: str) -> None:
    """ValueError unless a box `extent` A across, chosen by `setting` (e.g. "box_length 30 A"),
    spans at most MAX_SOURCE_COPIES copies of the periodic cell of `atoms`: the product over the
    periodic axes of extent / the cell's height along them."""
    periodic = atoms.pbc
    heights = cell_heights(atoms)[periodic]
    copies = float(np.prod(extent / heights))
    if copies > MAX_SOURCE_COPIES:
        largest = (MAX_SOURCE_COPIES * np.prod(heights)) ** (1 / len(heights))
        raise ValueError(
            f"{setting} gives a box {extent:.4g} A across, {copies:.3g} copies of the "
            f"{len(atoms)}-atom frame's periodic cell (heights "
            f"{', '.join(f'{h:.4g}' for h in heights)} A); at most {MAX_SOURCE_COPIES} are "
            f"allowed, as a larger box holds every atom several times over and costs more to "
            f"label than the frame itself: make the box at most {largest:.4g} A across, or label "
            "the whole frame")


def surroundings(atoms: Atoms, centre: int, radius: float) -> Surroundings:
    """Every atom and periodic image within `radius` A of atom `centre`, the centre first."""
    if not 0 <= centre < len(atoms):
        raise IndexError(f"centre {centre} is not an atom index of a {len(atoms)}-atom frame")
    check_structure(atoms, "the frame to cut")
    cell = atoms.cell.complete()
    periodic = atoms.pbc
    raw = atoms.positions - atoms.positions[centre]
    fractional = np.linalg.solve(cell.T, raw.T).T
    wrap = np.where(periodic, -np.floor(fractional + 0.5), 0.0).astype(int)
    base = raw + wrap @ cell
    # a wrapped atom is within half a cell vector of the centre
    reach = np.where(periodic, np.ceil(radius / cell_heights(atoms) + 0.5), 0).astype(int)
    pieces = []
    for shift in itertools.product(*(range(-r, r + 1) for r in reach)):
        shift = np.array(shift)
        displacement = base + shift @ cell
        distance = np.linalg.norm(displacement, axis=1)
        inside = np.flatnonzero(distance <= radius)
        pieces.append((inside, wrap[inside] + shift, displacement[inside], distance[inside]))
    index, image, displacement, distance = (np.concatenate(p) for p in zip(*pieces))
    order = np.lexsort((image[:, 2], image[:, 1], image[:, 0], index, distance))
    return Surroundings(index[order], image[order], displacement[order], distance[order])


def attached_hydrogens(numbers: np.ndarray, near: Surroundings) -> np.ndarray:
    """For every entry of `near`, the entry of the heavy atom it belongs to (itself if heavy).

    A hydrogen belongs to its nearest non-hydrogen atom within BOND_FACTOR x the covalent
    radii; a hydrogen with none (H2, a free proton) is a unit of its own.
    """
    species = numbers[near.index]
    owner = np.arange(len(species))
    heavy = np.flatnonzero(species != 1)
    for h in np.flatnonzero(species == 1):
        if not len(heavy):
            break
        gaps = np.linalg.norm(near.displacement[heavy] - near.displacement[h], axis=1)
        nearest = int(np.argmin(gaps))
        bond = BOND_FACTOR * (covalent_radii[1] + covalent_radii[species[heavy[nearest]]])
        if gaps[nearest] <= bond:
            owner[h] = heavy[nearest]
    return owner


def _box(atoms: Atoms, chosen: Surroundings, core: np.ndarray, lengths, pbc) -> Atoms:
    box = Atoms(numbers=atoms.numbers[chosen.index],
                positions=chosen.displacement + 0.5 * np.asarray(lengths, dtype=float),
                cell=np.diag(np.broadcast_to(lengths, 3).astype(float)), pbc=pbc)
    box.arrays["core_mask"] = np.asarray(core, dtype=bool)
    box.arrays["source_index"] = chosen.index.astype(int)
    box.arrays["source_image"] = chosen.image.astype(int)
    return box


def cut_cube(atoms: Atoms, centre: int, core_radius: float, box_length: float | None = None,
             n_atoms: int | None = None, molecules: bool = False,
             min_distance: float | None = None) -> Atoms:
    """Periodic cube of the atoms nearest to `centre`, centre in the middle (seed 002).

    "Nearest" is in the cube's own metric, max(|dx|, |dy|, |dz|), so that the atoms fill the cube
    (Euclidean nearest atoms would form a sphere, spilling over the faces and leaving the corners
    empty). box_length (A) and n_atoms: either or both. With only box_length, the atoms are those
    of the source inside the half-open cube [-L/2, L/2)^3 around the centre, which keeps the local
    density; with n_atoms, the n_atoms nearest, and with only n_atoms the edge keeps the source's
    mean density (of heavy atoms, with molecules). With molecules, whole molecules are taken:
    heavy atoms are chosen, each with its bonded hydrogens. A buffer atom (molecule) in close
    contact (see `contact_limit`) with a nearer one across the new cell's faces is left out: it
    is the same atom twice, come in through opposite faces; with n_atoms, the next nearest takes
    its place, so that the box holds n_atoms units. Core: the atoms (molecules) within
    core_radius (A) of the centre.
    """
    if box_length is None and n_atoms is None:
        raise ValueError("strategy 'cube' needs box_length (A) or n_atoms")
    counted = n_atoms is not None  # (the count is kept when a duplicate unit is left out)
    if box_length is None:
        n_source = int((atoms.numbers != 1).sum()) if molecules else len(atoms)
        box_length = (n_atoms * atoms.get_volume() / max(n_source, 1)) ** (1 / 3)
        check_box_size(atoms, box_length, f"n_atoms = {n_atoms}")
    else:
        check_box_size(atoms, box_length, f"box_length {box_length:g} A")
    reach = box_length * (0.5 * np.sqrt(3.0) if n_atoms is None else 1.0)
    while True:
        near = surroundings(atoms, centre, reach + (2.0 if molecules else 0.0))
        owner = attached_hydrogens(atoms.numbers, near) if molecules else np.arange(len(near.index))
        units = np.flatnonzero((owner == np.arange(len(owner))) & (near.distance <= reach))
        units = units[np.argsort(np.abs(near.displacement[units]).max(axis=1), kind="stable")]
        if n_atoms is None:
            half = 0.5 * box_length
            inside = np.all((near.displacement[units] >= -half)
                            & (near.displacement[units] < half), axis=1)
            units, n_atoms = units[inside], int(inside.sum())
        if len(units) >= n_atoms or reach > 10 * box_length:
            break
        reach *= 1.5
    if len(units) < n_atoms:
        raise ValueError(f"the frame has only {len(units)} atoms near atom {centre}, fewer than "
                         f"n_atoms = {n_atoms}")
    for extra in range(len(units) - n_atoms + 1 if counted else 1):
        chosen_units = units[:n_atoms + extra]
        members = np.flatnonzero(np.isin(owner, chosen_units))  # (by Euclidean distance)
        core = np.isin(owner[members], chosen_units[near.distance[chosen_units] <= core_radius])
        box = _box(atoms, near.take(members), core, box_length, True)
        keep = _without_duplicates(box, owner[members], contact_limit(min_distance))
        kept = chosen_units[np.isin(chosen_units, owner[members][keep])]
        if len(kept) >= n_atoms or not counted:
            break
    if counted:  # the n_atoms nearest units of those not left out as duplicates
        keep &= np.isin(owner[members], kept[:n_atoms])
    return box[keep]


def _without_duplicates(box: Atoms, owner: np.ndarray, limit) -> np.ndarray:
    """Mask keeping every unit (atom or molecule) but those in close contact with a unit nearer
    the centre (atoms are ordered by distance from it); core units are always kept."""
    species = np.unique(box.numbers)
    # (pairs out to the largest limit only: the same close pairs as out to 4 A, where a dense
    # 177-atom cube took 0.5 s a call and a cube whose crystal does not fit calls it 138 times)
    reach = float(np.max(limit(species[:, None], species[None, :]))) + 0.01
    i, j, d = neighbor_list("ijd", box, reach)
    close = (i < j) & (d < limit(box.numbers[i], box.numbers[j]))
    dropped: set[int] = set()
    for first, second in sorted(zip(i[close], j[close]), key=lambda pair: (pair[1], pair[0])):
        if owner[first] not in dropped and not box.arrays["core_mask"][second]:
            dropped.add(owner[second])
    return ~np.isin(owner, list(dropped))


def cut_cluster(atoms: Atoms, centre: int, core_radius: float,
                radius: float | None = None) -> Atoms:
    """Non-periodic sphere of `radius` A (default core_radius) around `centre` (seed 000)."""
    radius = core_radius if radius is None else radius
    check_box_size(atoms, 2 * radius, f"cluster radius {radius:g} A")
    near = surroundings(atoms, centre, radius)
    return _box(atoms, near, near.distance <= core_radius, 2 * (radius + CLUSTER_VACUUM), False)


def cut_embedding(atoms: Atoms, centre: int, core_radius: float, rng: np.random.Generator,
                  noise: float = 0.2, min_distance: float | None = None,
                  growth: float = 0.1) -> Atoms:
    """Periodic embedding (seed 000): the tightest cube around the environment within core_radius.

    Atoms of the cube outside the environment are buffer atoms, displaced by Gaussian noise of
    `noise` A; the cubic cell then grows by `growth` A until no two atoms are in close contact
    (see `closest_contact`), or until the gap across the faces alone guarantees it.
    """
    check_box_size(atoms, 2 * core_radius, f"core_radius {core_radius:g} A")
    near = surroundings(atoms, centre, core_radius * np.sqrt(3.0))
    core = near.distance <= core_radius
    half = np.abs(near.displacement[core]).max() + 1e-9
    near = near.take(np.all(np.abs(near.displacement) <= half, axis=1))
    core = near.distance <= core_radius
    shifted = near.displacement.copy()
    shifted[~core] += rng.normal(scale=noise, size=(int((~core).sum()), 3))
    near.displacement = shifted
    limit = contact_limit(min_distance)
    numbers = atoms.numbers[near.index]
    # once the gap across the faces exceeds every pair's limit, growing cannot help any more
    enough = np.ptp(shifted, axis=0).max() + limit(numbers, numbers).max()
    length = 2 * half
    while True:
        box = _box(atoms, near, core, length, True)
        if closest_contact(box, limit)[1] >= 1.0 or length > enough:
            return box
        length += growth


def whole_frame_box(atoms: Atoms) -> Atoms:
    """The whole frame as a box: same atoms, cell and pbc, every atom core, no relaxation."""
    box = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    box.arrays["core_mask"] = np.ones(len(box), bool)  # every atom is the source's
    box.arrays["source_index"] = np.arange(len(box))
    box.info.update(strategy="whole-frame", relaxation="none")
    return box
