"""LTAU-FF: the training-error distributions of latent-space neighbours (Vita et al., seed 003).

Sec. 3.4: while a model trains, the force error of every training atom is logged at every epoch,
eps_i^t = |F_i,ref - F_i^t|_2 (eV/A). Binned over [0, eps_max] (eps_max: the largest error seen
in training), each atom's trajectory gives an error PDF p_i. The bins are kept per atom and epoch
(one small integer each), so PDFs of any resolution cost the same memory: the first epochs of a
short training set eps_max far above the final errors, and a fine grid keeps those resolved. A new atom j gets the mean PDF of its
k nearest training atoms in the model's latent space (k = 10), p_j = (1/k) sum_{i in N_j} p_i, and
its uncertainty is the expectation of p_j, an expected force error in eV/A.

App. B.2: the k nearest neighbours come from FAISS, an exact index (IndexFlatL2) for small sets
and HNSW (M = 32, efConstruction = 40, efSearch = 16) for large ones. App. D: an atom is flagged
out of domain when its nearest training atom is farther than a cutoff taken from the training
atoms' own nearest-neighbour distances (here their `ood_quantile` quantile).

Neighbours are searched among training atoms of the same element only: an error PDF of one
element says nothing about another.

Error log format (`log_training_errors` writes it; log your own the same way): an .npz with
`errors` (n_epochs, n_atoms) float, eV/A, the error of each training atom after each epoch, atoms
numbered frame after frame through the training file; `epochs` (n_epochs,) int; and `numbers`
(n_atoms,) the atomic numbers, checked against the training file.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import re
from pathlib import Path

import faiss
import numpy as np
import torch
from ase.data import chemical_symbols
from tqdm.auto import tqdm

from ..common.structures import DEFAULT_FORCES_KEYS, load_structures, reference_forces
from .files import load_estimator, read_npz, save_estimator, write_npz
from .latent import LatentModel
from .mace_model import MaceModel, as_model
from .prediction import Prediction, model_alone

FORMAT_VERSION = 1
HNSW_ABOVE = 100_000  # training atoms of one element beyond which the search is approximate
HNSW_LINKS, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 40, 16  # seed 003 App. B.2
CHECKPOINT_EPOCH = re.compile(r"_epoch-(\d+)\.pt$")


def checkpoint_files(checkpoints) -> list[Path]:
    """MACE checkpoint files in epoch order, from a directory or a list of files;
    FileNotFoundError naming the directory or files when there is none, or one is missing."""
    if isinstance(checkpoints, (str, Path)):
        folder = Path(checkpoints)
        if not folder.is_dir():
            raise FileNotFoundError(f"checkpoint directory '{folder}' does not exist")
        where, checkpoints = f"directory '{folder}'", sorted(folder.glob("*.pt"))
    else:
        checkpoints = [Path(c) for c in checkpoints]
        where = "the files given"
        missing = [str(c) for c in checkpoints if not c.is_file()]
        if missing:
            raise FileNotFoundError(f"checkpoint files do not exist: {', '.join(missing)}")
    files = [c for c in checkpoints if CHECKPOINT_EPOCH.search(c.name)]
    if not files:
        raise FileNotFoundError(
            f"no MACE checkpoint files (*_epoch-N.pt) in {where}; train with mace_run_train "
            "--save_all_checkpoints --keep_checkpoints to keep one per epoch")
    return sorted(files, key=lambda f: int(CHECKPOINT_EPOCH.search(f.name).group(1)))


def log_training_errors(model, checkpoints, structures, output: str | Path,
                        forces_key: str | None = None, batch_size: int = 16) -> np.ndarray:
    """Write the error log of `model` (MACE file, for its architecture) trained through
    `checkpoints` (MACE's `--save_all_checkpoints` files, one per epoch, or their directory) on
    the labeled `structures`; returns the errors (n_epochs, n_atoms) in eV/A."""
    files = checkpoint_files(checkpoints)
    model = as_model(model)
    structures = load_structures(structures)
    keys = DEFAULT_FORCES_KEYS if forces_key is None else (forces_key,)
    reference = np.concatenate([reference_forces(a, keys, i) for i, a in enumerate(structures)])
    network = copy.deepcopy(model.module)
    errors = np.empty((len(files), len(reference)))
    for epoch, file in enumerate(tqdm(files, desc="training errors", unit="epoch")):
        network.load_state_dict(checkpoint_weights(file, model.device))
        forces = []
        for start in range(0, len(structures), batch_size):
            graph = model.graph(structures[start:start + batch_size])
            forces.append(network(graph, compute_force=True)["forces"].detach().cpu().numpy())
        errors[epoch] = np.linalg.norm(np.concatenate(forces) - reference, axis=1)
    epochs = [int(CHECKPOINT_EPOCH.search(f.name).group(1)) for f in files]
    write_npz(output, errors=errors.astype(np.float32), epochs=np.array(epochs),
              numbers=np.concatenate([a.numbers for a in structures]))
    return errors


def checkpoint_weights(file: Path, device: str) -> dict:
    """The network weights (state dict) of a MACE checkpoint, read with torch's weights-only
    loader: tensors and plain containers (a checkpoint's model, optimizer and scheduler states)
    load, a pickled object that would run code is refused (ValueError naming the file)."""
    try:
        checkpoint = torch.load(file, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        detail = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
        raise ValueError(f"MACE checkpoint '{file}' holds more than tensors and plain "
                         f"containers, and unpickling it could run code: refused ({detail})"
                         ) from err
    except Exception as err:  # torch raises many kinds for a broken file
        raise ValueError(f"cannot read MACE checkpoint '{file}': {err}") from err
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict)):
        raise ValueError(f"MACE checkpoint '{file}' has no 'model' state dict")
    return checkpoint["model"]


def read_error_log(path: str | Path, numbers: np.ndarray) -> np.ndarray:
    """The errors (n_epochs, n_atoms) of an error log, checked against the training atoms."""
    log = read_npz(path, "error log")
    if "errors" not in log:
        raise ValueError(f"'{path}' has no 'errors' array of shape (n_epochs, n_atoms)")
    if "numbers" in log and not np.array_equal(log["numbers"], numbers):
        raise ValueError(f"error log '{path}' has {len(log['numbers'])} atoms that are not the "
                         f"{len(numbers)} atoms of the training structures")
    return checked_errors(log["errors"], len(numbers), f"error log '{path}'")


def checked_errors(errors, n_atoms: int, source: str) -> np.ndarray:
    """`errors` as floats (n_epochs, n_atoms) in eV/A; ValueError naming `source` unless they have
    that shape and are finite and non-negative."""
    errors = np.asarray(errors, dtype=float)
    if errors.ndim != 2:
        raise ValueError(f"{source} has errors of shape {errors.shape}, not (n_epochs, n_atoms)")
    if errors.shape[1] != n_atoms:
        raise ValueError(f"{source} has {errors.shape[1]} atoms that are not the {n_atoms} atoms "
                         "of the training structures")
    if not (np.isfinite(errors).all() and (errors >= 0).all()):
        raise ValueError(f"{source} holds negative or non-finite errors")
    return errors


def nearest_neighbour_index(descriptors: np.ndarray, kind: str = "auto") -> faiss.Index:
    """A FAISS L2 index of `descriptors`: exact ("flat"), HNSW ("hnsw") or by size ("auto")."""
    if kind == "auto":
        kind = "hnsw" if len(descriptors) > HNSW_ABOVE else "flat"
    width = descriptors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatL2(width)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(width, HNSW_LINKS)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise ValueError(f"index must be 'auto', 'flat' or 'hnsw', got {kind!r}")
    index.add(np.ascontiguousarray(descriptors, dtype=np.float32))
    return index


class LTAU:
    """Single-model uncertainty from training-error distributions of latent neighbours.

    Build with `LTAU.fit(model, structures, errors)` or `LTAU.load("ltau.npz")`.
    `predict(atoms)` gives the model's energy, forces and stress with atomic_uncertainty = the
    expected force error (eV/A), and in `extra` "latent_distance" (distance to the nearest
    training atom of the same element) and "out_of_domain" (that distance beyond the cutoff).
    `predict(atoms, uncertainty=False)` runs the model alone (no nearest-neighbour search), for
    the steps a monitor does not read.
    """

    kind = "ltau"
    unit = "eV/A"

    def __init__(self, model: MaceModel | str | Path, indices: dict, bins: dict,
                 bin_edges: np.ndarray, ood_cutoffs: dict, k: int = 10):
        self.model = as_model(model)
        self.latent = LatentModel(self.model)
        for element, index in indices.items():
            if index.d != self.latent.width:
                raise ValueError(f"LTAU index of {chemical_symbols[element]} was built for latent "
                                 f"descriptors of width {index.d}, but '{self.model.name}' has "
                                 f"{self.latent.width}: it belongs to another model")
        self.indices, self.bins, self.ood_cutoffs = indices, bins, ood_cutoffs
        self.bin_edges = np.asarray(bin_edges, dtype=float)
        self.bin_centres = 0.5 * (self.bin_edges[1:] + self.bin_edges[:-1])
        self.n_epochs = next(iter(bins.values())).shape[1]
        self.k = int(k)

    @classmethod
    def fit(cls, model, structures, errors, k: int = 10, bins: int = 1000,
            error_max: float | None = None, index: str = "auto", ood_quantile: float = 0.999,
            first_epoch: int = 0, progress: bool = True) -> "LTAU":
        """Bin the error log `errors` (file, or array (n_epochs, n_atoms) in eV/A) of the
        training `structures` from `first_epoch` on into `bins` PDFs over [0, error_max]
        (default: the largest of those errors) and index the training atoms' latent
        descriptors, per element. A short training's first epochs are a barely trained model;
        `first_epoch` leaves them out."""
        model = as_model(model)
        structures = load_structures(structures)
        latent = LatentModel(model)
        descriptors, numbers = latent.training_descriptors(structures, progress=progress)
        errors = (read_error_log(errors, numbers) if isinstance(errors, (str, Path))
                  else checked_errors(errors, len(numbers), "the error log"))
        if not 0 <= first_epoch < len(errors):
            raise ValueError(f"first_epoch {first_epoch} is not one of the {len(errors)} "
                             "logged epochs")
        errors = errors[first_epoch:]
        error_max = float(errors.max()) if error_max is None else float(error_max)
        if not error_max > 0:
            raise ValueError(f"error_max must be positive, got {error_max}")
        edges = np.linspace(0.0, error_max, bins + 1)
        which = bin_of(errors.T, edges)
        indices, atom_bins, cutoffs = {}, {}, {}
        for element in np.unique(numbers):
            mine = numbers == element
            if mine.sum() <= k:
                raise ValueError(f"{mine.sum()} training atoms of {chemical_symbols[element]} "
                                 f"are too few for k = {k} nearest neighbours")
            indices[int(element)] = nearest_neighbour_index(descriptors[mine], index)
            atom_bins[int(element)] = which[mine]
            squared, _ = indices[int(element)].search(
                np.ascontiguousarray(descriptors[mine], dtype=np.float32), 2)
            cutoffs[int(element)] = float(np.quantile(np.sqrt(squared[:, 1]), ood_quantile))
        return cls(model, indices, atom_bins, edges, cutoffs, k)

    def _neighbours(self, atoms, descriptors: np.ndarray):
        """Per element present: its atoms' rows, squared distances and indices of k neighbours."""
        for element in np.unique(atoms.numbers):
            if int(element) not in self.indices:
                raise ValueError(f"the LTAU index has no training atoms of "
                                 f"{chemical_symbols[element]} (it has "
                                 f"{[chemical_symbols[z] for z in self.indices]})")
            rows = np.flatnonzero(atoms.numbers == element)
            query = np.ascontiguousarray(descriptors[rows], dtype=np.float32)
            squared, neighbours = self.indices[int(element)].search(query, self.k)
            yield int(element), rows, squared, neighbours

    def error_distribution(self, atoms) -> np.ndarray:
        """Error PDF (N, bins) of every atom of `atoms` (probability per bin of `bin_edges`)."""
        _, descriptors = self.latent.predict(atoms)
        n_bins = len(self.bin_centres)
        pdf = np.empty((len(atoms), n_bins))
        for element, rows, _, neighbours in self._neighbours(atoms, descriptors):
            which = self.bins[element][neighbours].reshape(len(rows), -1).astype(np.int64)
            which += n_bins * np.arange(len(rows))[:, None]
            counts = np.bincount(which.ravel(), minlength=len(rows) * n_bins)
            pdf[rows] = counts.reshape(len(rows), n_bins) / which.shape[1]
        return pdf

    def predict(self, atoms, uncertainty: bool = True) -> Prediction:
        """Model energy, forces, stress, and atomic_uncertainty = expected force error (eV/A);
        with uncertainty=False the model's results alone (atomic_uncertainty None, extra only
        "energies")."""
        if not uncertainty:
            return model_alone(self.model, atoms)
        output, descriptors = self.latent.predict(atoms)
        expected, distance = np.empty(len(atoms)), np.empty(len(atoms))
        outside = np.empty(len(atoms), dtype=bool)
        for element, rows, squared, neighbours in self._neighbours(atoms, descriptors):
            # expectation of the neighbours' mean PDF = mean bin centre over their trajectories
            expected[rows] = self.bin_centres[self.bins[element][neighbours]].mean(axis=(1, 2))
            distance[rows] = np.sqrt(np.maximum(squared[:, 0], 0.0))
            outside[rows] = distance[rows] > self.ood_cutoffs[element]
        return Prediction(energy=output.energy, forces=output.forces, stress=output.stress,
                          atomic_uncertainty=expected,
                          extra={"energies": output.atomic_energies, "latent_distance": distance,
                                 "out_of_domain": outside})

    def state_sha256(self) -> str:
        """SHA-256 of what the uncertainty depends on besides the model: binned errors, k."""
        digest = hashlib.sha256(np.array([self.k]).tobytes())
        digest.update(self.bin_edges.tobytes())
        for element in sorted(self.bins):
            digest.update(np.ascontiguousarray(self.bins[element]).tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write the estimator (indices, PDFs, cutoffs) to one .npz file."""
        arrays = {}
        for element in self.indices:
            arrays[f"index_{element}"] = faiss.serialize_index(self.indices[element])
            arrays[f"bins_{element}"] = self.bins[element]
        save_estimator(path, self.kind, FORMAT_VERSION, self.model,
                       elements=np.array(sorted(self.indices)), bin_edges=self.bin_edges, k=self.k,
                       ood_cutoffs=np.array([self.ood_cutoffs[z] for z in sorted(self.indices)]),
                       **arrays)

    @classmethod
    def load(cls, path: str | Path, model: str | Path | None = None) -> "LTAU":
        """Read a file written by `save` (model next to it unless given; another is refused)."""
        stored, model = load_estimator(path, cls.kind, FORMAT_VERSION, model)
        elements = [int(z) for z in stored["elements"]]
        indices = {z: faiss.deserialize_index(stored[f"index_{z}"]) for z in elements}
        for index in indices.values():
            if isinstance(index, faiss.IndexHNSWFlat):
                index.hnsw.efSearch = HNSW_EF_SEARCH
        return cls(model, indices, {z: stored[f"bins_{z}"] for z in elements},
                   stored["bin_edges"], dict(zip(elements, stored["ood_cutoffs"].tolist())),
                   int(stored["k"]))


def bin_of(errors: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index (uint16) of the bin of `edges` holding each error (eV/A); errors beyond the last
    edge go to the last bin."""
    if len(edges) - 1 > np.iinfo(np.uint16).max:
        raise ValueError(f"at most {np.iinfo(np.uint16).max} bins, got {len(edges) - 1}")
    which = np.searchsorted(edges, errors, side="right") - 1
    return np.clip(which, 0, len(edges) - 2).astype(np.uint16)
