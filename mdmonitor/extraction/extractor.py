"""Extractor: cuts boxes around the most uncertain atoms of triggered frames into a queue.

Used as `MonitoredCalculator(..., extractor=Extractor(...))`: on every frame whose local
uncertainty crosses the threshold it chooses centres (most uncertain first, spread apart, with a
cool-down per region), cuts one box per centre and sample, checks it, and writes it to the
candidate queue, relaxing the buffer of cubes inline, in a background process, or leaving that
to `mdmonitor label`.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.calculators.calculator import Calculator

from ..common.settings import (
    non_negative_integer,
    non_negative_number,
    positive_integer,
    positive_number,
)
from .box_quality import QualityLimits, assess, hydrogen_partners
from .candidates import CandidateQueue, box_name
from .centres import CoolDown, choose_centres
from .cutting import cut_cluster, cut_cube, cut_embedding
from .host_embedding import check_host, embed_in_host
from .relaxation import (BondsNotHeld, ForceFieldCalculator, buffer_hydrogen_bonds,
                         calculator_from_files, relax_border)

STRATEGIES = ("cube", "embed", "cluster", "host")
NOISY_STRATEGIES = ("embed", "host")  # buffer displaced by the cut itself, by default
RELAX_MODES = ("inline", "worker", "label")
EMBEDDING_NOISE = 0.2  # A, seed 000
PARENT_POLL = 0.5  # s between the worker's checks that the MD process still lives


def relax_and_assess(box: Atoms, calculator: Calculator, limits: QualityLimits,
                     core_radius: float) -> list[str]:
    """Relax the border of cube `box` in place, record how, and return its failed gates. A box
    of whole molecules keeps its buffer's X-H bond lengths, and fails when a hydrogen's bond
    changed."""
    hydrogens = hydrogen_partners(box) if box.info.get("molecules") else None
    bonds = buffer_hydrogen_bonds(box, hydrogens) if hydrogens else []
    try:
        relaxation = relax_border(box, calculator, bonds=bonds)
    except BondsNotHeld as err:  # the same again on a retry: the box fails at once
        box.info["quality"] = f"border relaxation: {err}"
        return [box.info["quality"]]
    if hydrogens is not None:
        box.info["relax_held_bonds"] = len(bonds)
    box.info.update(relaxation="relaxed", relax_steps=relaxation.steps,
                    relax_seconds=round(relaxation.seconds, 3),
                    max_buffer_force_before=round(relaxation.max_buffer_force_before, 6))
    return assess(box, limits, core_radius, buffer_force=relaxation.max_buffer_force,
                  hydrogens=hydrogens)


def limits_of(box: Atoms) -> QualityLimits:
    """The gate limits an extractor recorded in a box's info."""
    min_distance = box.info.get("min_distance_limit", "covalent")
    default = QualityLimits()
    return QualityLimits(min_distance=None if min_distance == "covalent" else float(min_distance),
                         max_buffer_force=float(box.info.get("max_buffer_force_limit",
                                                             default.max_buffer_force)))


def model_identity(estimator) -> tuple[list[Path], list[str]]:
    """Model files and their SHA-256 behind an estimator ([] for ASE-calculator committees)."""
    models = getattr(estimator, "models", None) or (
        [estimator.model] if hasattr(getattr(estimator, "model", None), "path") else [])
    return [Path(m.path).resolve() for m in models], [m.sha256() for m in models]


def relaxation_model(estimator):
    """What relaxes buffers for `estimator`: the committee (mean), or the single model of an
    LLPR, LTAU or GMM estimator."""
    model = getattr(estimator, "model", None)
    return model if hasattr(model, "predict") else estimator


_worker_calculator: Calculator | None = None
_worker_unable: str = ""  # why the worker could not load its model, if it could not


def _end_with(parent: int) -> None:
    """End this process (the worker) within PARENT_POLL s of process `parent` (the MD) ending,
    even by kill -9: a thread watches whether the process has been handed to another parent."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-the-md", daemon=True).start()


def _start_worker(parent: int, model_files: list[str], model_sha256: list[str]) -> None:
    _end_with(parent)
    import torch

    global _worker_calculator, _worker_unable
    torch.set_num_threads(1)
    try:  # hashed before they are unpickled, as everywhere else
        _worker_calculator = calculator_from_files(model_files, sha256=model_sha256)
    except Exception as err:  # every box is then left to `mdmonitor label`, with the reason
        _worker_unable = f"the worker could not load the model: {err}"


def _relax_in_worker(box: Atoms, name: str, queue_root: str, core_radius: float) -> str:
    queue = CandidateQueue(queue_root)
    try:
        if _worker_calculator is None:
            raise RuntimeError(_worker_unable)
        failures = relax_and_assess(box, _worker_calculator, limits_of(box), core_radius)
    except Exception as err:  # leave the box to `mdmonitor label`, which relaxes it again
        box.info["relaxation"] = "pending"
        queue.write(box, name, "pending", "written", detail=f"worker relaxation failed: {err}")
        return name
    if failures:
        queue.write(box, name, "failed", "failed", detail="; ".join(failures))
    else:
        queue.write(box, name, "pending", "relaxed")
    return name


def centre_numbers(elements, name: str = "centre_elements") -> np.ndarray | None:
    """Atomic numbers of the chemical symbols `elements` (None: every element may be a centre);
    ValueError naming the setting `name` for a symbol that is not an element."""
    if elements is None:
        return None
    if isinstance(elements, str) or not len(elements):
        raise ValueError(f"{name} must be a non-empty list of chemical symbols such as ['O'], "
                         f"got {elements!r}")
    unknown = [e for e in elements if e not in atomic_numbers]
    if unknown:
        raise ValueError(f"{name}: {', '.join(map(repr, unknown))} is not a chemical symbol")
    return np.array([atomic_numbers[e] for e in elements])


class Extractor:
    """Cuts boxes around uncertain atoms and writes them to a queue directory.

    strategy: "cube" (seed 002: nearest atoms in a periodic cube, border relaxed), "embed" (seed
    000: tightest periodic cube around the environment, buffer displaced by Gaussian noise),
    "cluster" (non-periodic sphere), "host" (seed 000: the environment embedded in a periodic host
    crystal, the host atoms near it displaced by noise; see `host_embedding`). core_radius (A):
    atoms kept exactly as in the source. box_length (A): cube edge (cube), sphere diameter
    (cluster); n_atoms: atoms (heavy atoms with molecules=True) in a cube. molecules (cube): whole
    molecules, heavy atoms with their hydrogens, whose X-H bond lengths the border relaxation holds.
    n_samples boxes per centre, buffer displaced by `noise` A (default 0.2 for embed and host, 0
    otherwise). host: the host crystal, an ASE Atoms or a structure name (fcc, bcc, hcp, diamond,
    sc) built of the environment's most common element with host_lattice_constant (A, default ASE's
    reference); host_margin (A, default core_radius): room around the environment; foreign_host
    allows a host of elements the environment lacks. min_distance (A): close-contact limit (default:
    half the sum of covalent radii). Centres: at most max_per_frame per frame, no two closer than
    separation (A, default 2 x core_radius), at most max_boxes per run, a region is not cut again
    for `cooldown` steps, and with centre_elements (symbols, e.g. ["O"]) only atoms of those
    elements are centres. relax: "inline" (blocks the MD), "worker" (a background process), "label"
    (left to `mdmonitor label`). max_buffer_force (eV/A): relaxed boxes with a larger buffer force
    fail. run_id names the boxes of one MD run: rerunning it with the same settings skips the boxes
    already queued and gives exactly the boxes of an uninterrupted run. seed makes noise repeatable.
    `blocking_seconds` lists how long the MD was held up by each frame that gave boxes.
    """

    def __init__(self, strategy: str = "cube", queue="candidates", core_radius: float = 4.0,
                 box_length: float | None = None, n_atoms: int | None = None,
                 molecules: bool = False, n_samples: int = 1, noise: float | None = None,
                 min_distance: float | None = None, separation: float | None = None,
                 max_per_frame: int = 1, max_boxes: int | None = None, cooldown: int = 50,
                 relax: str = "inline", max_buffer_force: float = 5.0, run_id: str = "run",
                 seed: int = 0, relax_with: Calculator | None = None, host=None,
                 host_lattice_constant: float | None = None, host_margin: float | None = None,
                 foreign_host: bool = False, centre_elements=None):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if relax not in RELAX_MODES:
            raise ValueError(f"unknown relax mode {relax!r}: choose one of {', '.join(RELAX_MODES)}")
        self.core_radius = positive_number("core_radius", core_radius)
        if box_length is not None:
            box_length = positive_number("box_length", box_length)
            if box_length <= 2 * self.core_radius:
                raise ValueError(f"core_radius {core_radius} A does not fit in a box of "
                                 f"{box_length} A: box_length must exceed 2 x core_radius")
        if strategy == "cube" and box_length is None and n_atoms is None:
            raise ValueError("strategy 'cube' needs box_length (A) or n_atoms")
        if (strategy == "host") != (host is not None):
            raise ValueError("strategy 'host' needs host= (an ASE Atoms of a periodic crystal or "
                             "a structure name such as 'fcc'), and only it takes one")
        if host is not None:
            check_host(host)
        self.host = host.copy() if hasattr(host, "copy") else host
        self.foreign_host = foreign_host
        self.host_lattice_constant = positive_number(
            "host_lattice_constant", host_lattice_constant, allow_none=True, meaning="length in A")
        self.host_margin = positive_number("host_margin", host_margin, allow_none=True,
                                           meaning="distance in A")
        if molecules and strategy != "cube":
            raise ValueError("molecules=True is supported by strategy 'cube' only")
        for name, value in (("n_samples", n_samples), ("max_per_frame", max_per_frame),
                            ("cooldown", cooldown)):
            positive_integer(name, value)
        self.noise = (EMBEDDING_NOISE if strategy in NOISY_STRATEGIES else 0.0) if (
            noise is None) else non_negative_number("noise", noise, meaning="displacement in A")
        if n_samples > 1 and self.noise <= 0:
            raise ValueError(f"n_samples = {n_samples} identical boxes: give noise > 0 (A)")
        self.strategy, self.box_length = strategy, box_length
        self.n_atoms = positive_integer("n_atoms", n_atoms, allow_none=True)
        self.molecules, self.n_samples = molecules, n_samples
        self.seed = non_negative_integer("seed", seed)
        self.limits = QualityLimits(
            min_distance=positive_number("min_distance", min_distance, allow_none=True,
                                         meaning="distance in A"),
            max_buffer_force=positive_number("max_buffer_force", max_buffer_force))
        self.separation = 2 * self.core_radius if separation is None else positive_number(
            "separation", separation, meaning="distance in A")
        self.max_per_frame = max_per_frame
        self.centre_numbers = centre_numbers(centre_elements)
        self.max_boxes = positive_integer("max_boxes", max_boxes, allow_none=True)
        self.cooldown = CoolDown(cooldown)
        self.relax = relax if strategy == "cube" else None
        self.run_id = run_id
        box_name(run_id, 0, 0)  # validates run_id
        self.queue = CandidateQueue(queue)
        self._box_steps = self.queue.source_steps(run_id)  # one per box of this run
        self.relax_with = relax_with
        self.model_files: list[Path] = []
        self.model_sha256: list[str] = []
        self.blocking_seconds: list[float] = []
        self._pool: ProcessPoolExecutor | None = None
        self._in_flight: dict[str, Future] = {}

    @property
    def boxes_written(self) -> int:
        """Boxes of this run in the queue (from before a restart too) or in the worker."""
        return len(self._box_steps)

    def boxes_before(self, step: int) -> int:
        """Boxes of this run cut from frames before `step`: what `max_boxes` counts, so a rerun
        of the same MD (a restart) finds the same budget at every step and cuts the same boxes,
        whatever it already finds in the queue."""
        return sum(s < step for s in self._box_steps)

    def use_estimator(self, estimator) -> None:
        """Record the monitor's model (identity in every box; relaxes buffers by default)."""
        self.model_files, self.model_sha256 = model_identity(estimator)
        if self.relax_with is None:
            self.relax_with = ForceFieldCalculator(relaxation_model(estimator))
        if self.relax == "worker" and not self.model_files:
            raise ValueError("relax='worker' needs an estimator built from MACE model files "
                             "(the worker loads them); use relax='inline' or 'label'")

    def check_frame(self, atoms: Atoms) -> None:
        """Cut a trial box around atom 0 of `atoms`, so that a frame that cannot give boxes
        (e.g. a box far larger than its cell) is refused now, not at the first trigger."""
        self.cut(atoms, 0)

    def cut(self, atoms: Atoms, centre: int, sample: int = 0, step: int = 0) -> Atoms:
        """The box around atom `centre` of `atoms`, before any buffer relaxation.

        Arrays core_mask, source_index, source_image; the centre is atom 0. Noise (if any) is
        seeded by (seed, step, centre, sample), so the same call gives the same box.
        """
        rng = np.random.default_rng([self.seed, step, centre, sample])
        if self.strategy == "cube":
            box = cut_cube(atoms, centre, self.core_radius, self.box_length, self.n_atoms,
                           self.molecules, self.limits.min_distance)
        elif self.strategy == "cluster":
            radius = self.core_radius if self.box_length is None else self.box_length / 2
            box = cut_cluster(atoms, centre, self.core_radius, radius)
            box.info["cluster_radius"] = radius
        elif self.strategy == "embed":
            box = cut_embedding(atoms, centre, self.core_radius, rng, self.noise,
                                self.limits.min_distance)
        else:
            box = embed_in_host(atoms, centre, self.core_radius, self.host, rng, self.noise,
                                self.host_margin, self.foreign_host, self.host_lattice_constant)
        if self.noise and self.strategy not in NOISY_STRATEGIES:
            buffer = ~box.arrays["core_mask"]
            box.positions[buffer] += rng.normal(scale=self.noise, size=(int(buffer.sum()), 3))
        tags = atoms.get_tags()
        box.info.update(
            strategy=self.strategy, core_radius=self.core_radius, molecules=self.molecules,
            noise=self.noise,
            seed=self.seed, sample=sample, source_step=step, centre_index=int(centre),
            centre_tag=int(tags[centre]),
            min_distance_limit=("covalent" if self.limits.min_distance is None
                                else self.limits.min_distance),
            max_buffer_force_limit=self.limits.max_buffer_force,
            relaxation="pending" if self.relax else "none")
        if box.pbc.all() and self.strategy != "host":  # (a host box records its host cell)
            box.info["box_length"] = float(box.cell.lengths()[0])
        return box

    def __call__(self, trigger) -> list[str]:
        """Cut, check and queue boxes for a `Trigger`; returns the names of the new boxes."""
        start = time.perf_counter()
        atoms, step = trigger.atoms, trigger.step
        remaining = (np.inf if self.max_boxes is None
                     else self.max_boxes - self.boxes_before(step))
        limit = int(min(self.max_per_frame, np.ceil(remaining / self.n_samples)))
        candidates = np.asarray(trigger.indices, dtype=int)
        if self.centre_numbers is not None:
            candidates = candidates[np.isin(atoms.numbers[candidates], self.centre_numbers)]
        centres = choose_centres(atoms, candidates, self.separation, max(limit, 0),
                                 avoid=self.cooldown.active(step))
        written = []
        for centre in centres:
            self.cooldown.record(step, centre)
            info = {"centre_local_uncertainty": float(trigger.local_uncertainty[centre])}
            if trigger.time_fs is not None:
                info["source_time_fs"] = trigger.time_fs
            for sample in range(self.n_samples):
                name = self.extract_at(atoms, centre, step, sample, info)
                if name is not None:
                    written.append(name)
        self._box_steps += [step] * len(written)
        if written:
            self.blocking_seconds.append(time.perf_counter() - start)
        return written

    def extract_at(self, atoms: Atoms, centre: int, step: int = 0, sample: int = 0,
                   info: dict | None = None) -> str | None:
        """Cut, check and queue the box around atom `centre` of `atoms`, with `info` added to
        its info (no choice of centre, cool-down or box budget: `__call__` does those).
        Returns the box's name, or None when the queue already holds it (from before a
        restart)."""
        name = box_name(self.run_id, step, centre, sample)
        if name in self._in_flight or self.queue.stage_of(name) is not None:
            return None
        box = self.cut(atoms, centre, sample, step)
        box.info.update(run_id=self.run_id, **(info or {}))
        if self.model_files:  # (extxyz cannot hold an empty string)
            box.info.update(model_files=";".join(map(str, self.model_files)),
                            model_sha256=";".join(self.model_sha256))
        self._dispatch(box, name, atoms)
        return name

    def _dispatch(self, box: Atoms, name: str, source: Atoms) -> None:
        failures = assess(box, self.limits, self.core_radius, source=source,
                          contacts=self.relax is None)
        if not failures and self.relax == "inline":
            if self.relax_with is None:
                raise RuntimeError("no model to relax the buffer with: pass the extractor to "
                                   "MonitoredCalculator(extractor=...) or give relax_with")
            try:
                failures = relax_and_assess(box, self.relax_with, self.limits, self.core_radius)
            except Exception as err:  # the MD goes on; `mdmonitor label` relaxes the box again
                box.info["relaxation"] = "pending"
                self.queue.write(box, name, "pending", "written",
                                 detail=f"inline relaxation failed: {err}")
                return
        if failures:
            self.queue.write(box, name, "failed", "failed", detail="; ".join(failures))
        elif self.relax == "worker":
            self._in_flight[name] = self._worker().submit(
                _relax_in_worker, box, name, str(self.queue.root), self.core_radius)
            self._in_flight[name].add_done_callback(lambda _: self._in_flight.pop(name, None))
        else:
            self.queue.write(box, name, "pending", "written")

    def _worker(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=get_context("spawn"), initializer=_start_worker,
                initargs=(os.getpid(), [str(p) for p in self.model_files], self.model_sha256))
        return self._pool

    def close(self) -> None:
        """Wait until the background worker has written every box handed to it."""
        if self._pool is not None:
            for future in list(self._in_flight.values()):
                future.result()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "Extractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
