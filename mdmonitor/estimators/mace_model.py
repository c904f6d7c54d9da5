"""MACE model files: loading with clear errors, one shared graph per frame, evaluation.

A committee of MACE models with the same elements and cutoff shares one graph (neighbour list
and one-hot species) per frame; only the network passes are repeated.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress

from ..common.geometry import check_structure
from ..common.mace_imports import mace_data, torch_geometric, torch_tools, utils
from ..common.trusted_pickles import ModelFileChanged, trusted_pickle_loads
from .prediction import MaceOutput, check_output


class MaceModel:
    """A MACE model file loaded for inference on CPU (or `device`).

    `path` is a file written by MACE training: a whole pickled model, so loading it runs code;
    load only files you trust. With `sha256` (hex) the file's bytes are hashed first and loaded
    only if they match (else ModelFileChanged); the very bytes hashed are the ones unpickled.
    Raises FileNotFoundError for a missing file and ValueError for a file that is not a MACE model.
    """

    def __init__(self, path: str | Path, device: str = "cpu", head: str | None = None,
                 sha256: str | None = None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MACE model file '{path}' does not exist")
        content = path.read_bytes()
        self._sha256 = hashlib.sha256(content).hexdigest()
        if sha256 is not None and sha256 != self._sha256:
            raise ModelFileChanged(path, sha256, self._sha256)
        try:  # in the scope: modules the pickle imports may torch.load or set torch's flag
            with trusted_pickle_loads():
                model = torch.load(io.BytesIO(content), map_location=device, weights_only=False)
        except Exception as err:  # torch raises many kinds for a bad pickle
            raise ValueError(f"cannot read MACE model file '{path}': {err}") from err
        if not (isinstance(model, torch.nn.Module) and hasattr(model, "atomic_numbers")
                and hasattr(model, "r_max") and hasattr(model, "readouts")):
            raise ValueError(f"'{path}' does not hold a MACE model (got {type(model).__name__})")
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.path = path
        self.name = path.name
        self.module = model
        self.device = device
        self.elements = tuple(int(z) for z in model.atomic_numbers)
        self.r_max = float(model.r_max)
        self.dtype = next(model.parameters()).dtype
        self.heads = list(getattr(model, "heads", None) or ["Default"])
        if head is None:
            head = "Default" if "Default" in self.heads else self.heads[0]
        if head not in self.heads:
            raise ValueError(f"head '{head}' is not in model '{self.name}' (heads: {self.heads})")
        self.head = head

    def __repr__(self) -> str:
        symbols = [chemical_symbols[z] for z in self.elements]
        return f"MaceModel('{self.path}', elements={symbols}, r_max={self.r_max} A)"

    def sha256(self) -> str:
        """Hex SHA-256 of the file's bytes as they were loaded: the identity of this model."""
        return self._sha256

    def check_compatible(self, other: "MaceModel", who: str = "committee members") -> None:
        """Refuse to combine models that disagree on elements or cutoff (`who` are the two, as
        the message names them)."""
        if other.elements != self.elements:
            raise ValueError(
                f"{who} disagree on elements: '{self.name}' has "
                f"{[chemical_symbols[z] for z in self.elements]}, '{other.name}' has "
                f"{[chemical_symbols[z] for z in other.elements]}")
        if other.r_max != self.r_max:
            raise ValueError(f"{who} disagree on cutoff: '{self.name}' has r_max = "
                             f"{self.r_max} A, '{other.name}' has {other.r_max} A")

    def graph(self, atoms) -> dict:
        """The MACE input graph of `atoms`, or of a list of Atoms as one batch (built once,
        usable by every compatible model)."""
        frames = [atoms] if hasattr(atoms, "positions") else list(atoms)
        table = utils.AtomicNumberTable(list(self.elements))
        data = []
        with torch_tools.default_dtype(self.dtype):
            for i, frame in enumerate(frames):
                check_structure(frame, "the structure" if len(frames) == 1 else f"frame {i}")
                check_elements(frame, self.elements, self.name)
                config = mace_data.config_from_atoms(frame, head_name=self.head)
                config.head = self.head
                data.append(mace_data.AtomicData.from_config(
                    config, z_table=table, cutoff=self.r_max, heads=self.heads))
        return torch_geometric.Batch.from_data_list(data).to(self.device).to_dict()

    def evaluate(self, graph: dict, compute_stress: bool, compute_force: bool = True,
                 create_graph: bool = False) -> dict:
        """Run the network on a graph from `graph`; returns MACE's raw output dictionary.

        create_graph: keep the autograd graph of the forces, so that a function of them can be
        differentiated with respect to the positions again (MACE keeps it when `training`).
        """
        inputs = {key: (value.to(self.dtype) if torch.is_tensor(value) and value.is_floating_point()
                        else value) for key, value in graph.items()}
        return self.module(inputs, training=create_graph, compute_force=compute_force,
                           compute_stress=compute_stress)

    def run(self, atoms) -> tuple[dict, MaceOutput]:
        """MACE's raw output for `atoms` and its conversion, checked finite."""
        raw = self.evaluate(self.graph(atoms), compute_stress=bool(atoms.pbc.all()))
        output = to_output(raw)
        check_output(f"model '{self.name}'", output)
        return raw, output

    def predict(self, atoms, graph: dict | None = None) -> MaceOutput:
        """Energy, atomic energies, forces and (periodic cells) stress of `atoms`."""
        graph = self.graph(atoms) if graph is None else graph
        return to_output(self.evaluate(graph, compute_stress=bool(atoms.pbc.all())))


def as_model(model: MaceModel | str | Path) -> MaceModel:
    """`model` itself, or the MACE model file it names, loaded (a pickle: trusted files only)."""
    return model if isinstance(model, MaceModel) else MaceModel(model)


def to_output(raw: dict) -> MaceOutput:
    """Convert MACE's output tensors to NumPy in ASE units and conventions."""
    stress = raw.get("stress")
    return MaceOutput(
        energy=float(raw["energy"].detach().sum()),
        atomic_energies=raw["node_energy"].detach().cpu().numpy().astype(float),
        forces=raw["forces"].detach().cpu().numpy().astype(float),
        stress=None if stress is None else
        full_3x3_to_voigt_6_stress(stress.detach().cpu().numpy()[0].astype(float)))


def check_elements(atoms, elements, model_name: str) -> None:
    """Raise ValueError naming any element of `atoms` the model was not trained on."""
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    unknown = sorted(set(atoms.numbers.tolist()) - set(elements))
    if unknown:
        raise ValueError(
            f"element(s) {[chemical_symbols[z] for z in unknown]} not known to model "
            f"'{model_name}' (its elements: {[chemical_symbols[z] for z in elements]})")
