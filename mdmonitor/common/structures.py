"""Reading structures and their reference labels, as every stage takes them: a file ASE reads,
one Atoms or a list of them; reference forces from a per-atom array or a stored result."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.calculator import PropertyNotImplementedError

DEFAULT_FORCES_KEYS = ("REF_forces", "forces")


def load_structures(structures) -> list:
    """A list of Atoms from a list, a single Atoms or a file readable by ase.io."""
    if isinstance(structures, (str, Path)):
        path = Path(structures)
        if not path.is_file():
            raise FileNotFoundError(f"structure file '{path}' does not exist")
        try:
            structures = ase.io.read(path, index=":")
        except Exception as err:  # ASE's readers raise anything from StopIteration to OSError
            reason = ": ".join(filter(None, (type(err).__name__, str(err))))
            raise ValueError(f"cannot read structures from '{path}' ({reason}); give a "
                             "structure file ASE reads (extxyz, cif, POSCAR, ...) with a known "
                             "extension or format") from err
        if not structures:
            raise ValueError(f"'{path}' holds no structures")
    elif hasattr(structures, "positions"):
        structures = [structures]
    structures = list(structures)
    if not structures:
        raise ValueError("no structures given")
    return structures


def reference_forces(atoms, keys=DEFAULT_FORCES_KEYS, frame: int = 0) -> np.ndarray:
    """(N, 3) reference forces (eV/A) of one labelled frame, `frame` its index for messages.

    For each name in `keys`, in order: the per-atom array ``atoms.arrays[name]`` (e.g. MACE's
    "REF_forces"), then the result of that name stored with the frame (e.g. the "forces"
    column of an extxyz file, which ASE reads into a SinglePointCalculator). A stored result
    computed for other positions does not count, and nothing is ever calculated here.
    """
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    for key in keys:
        value = atoms.arrays.get(key)
        if value is None and atoms.calc is not None:
            try:
                value = atoms.calc.get_property(key, atoms, allow_calculation=False)
            except PropertyNotImplementedError:
                value = None
        if value is None:
            continue
        value = np.asarray(value, dtype=float)
        if value.shape != (len(atoms), 3):
            raise ValueError(
                f"frame {frame}: reference forces '{key}' have shape {value.shape} but the frame "
                f"has {len(atoms)} atoms, so labels and structure do not belong together; "
                f"expected shape ({len(atoms)}, 3)")
        if not np.isfinite(value).all():
            atom = int(np.argwhere(~np.isfinite(value))[0][0])
            raise ValueError(f"frame {frame}: reference forces '{key}' of atom {atom} are "
                             f"{value[atom]}: labels must be finite")
        return value
    raise ValueError(
        f"frame {frame} has no reference forces: looked for {', '.join(map(repr, keys))} among "
        "its per-atom arrays and stored results; label every frame with the reference method "
        "or name the key that holds its forces (--forces-key)")
