"""The active-learning loop: monitor -> extract -> label -> retrain -> redeploy, generation after
generation, in a run directory a person can read and a killed run resumes from.

    run/generation-000/  models/ (the models this generation's MD ran with), estimator.npz
                         (single-model estimators), calibration.json (if any; generation 0:
                         models.calibration, its SHA-256 in calibration.source.json), state.json,
                         monitor.csv, md.extxyz, candidates/ (the queue), labeled.extxyz,
                         holdout.extxyz (holdout-so-far.extxyz: every generation's, or the
                         last calibration.window, for the calibration), train.extxyz,
                         valid.extxyz, training/ (mace_run_train work and logs); with [test]
                         boxes: test-candidates/ (their queue), test-boxes.extxyz (labeled),
                         test-so-far.extxyz (every generation's)
    run/generation-001/  models/ ... trained in generation 0
    run/summary.csv      one row per generation; run/summary.png
    run/labeling.log     what Dask logged while [labeling] workers labeled (failed calculations)

Each stage ends by writing state.json atomically; a rerun starts at the first unfinished stage
of the first unfinished generation: the MD is run again from its start (its boxes are named by
step and centre, so none is written twice), the labeler resumes its queue, a model already
written is not trained again, and a finished generation's directory is not touched again.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import ase.io
import numpy as np

from ..bundled_models import demo_models
from ..common.atomic_files import replaced_atomically, write_atomically
from ..estimators.committee import Committee
from ..estimators.fitted import load_fitted
from ..estimators.gmm import LatentGMM
from ..estimators.llpr import LastLayerLPR
from ..estimators.ltau import LTAU, log_training_errors
from ..estimators.mace_model import MaceModel
from ..extraction.candidates import CandidateQueue
from ..labeling.labeler import Labeler, file_sha256, open_pool
from ..labeling.reference import Reference
from ..labeling.workers import InProcess
from ..monitor_log import read_log
from ..quality.calibration import Calibration
from .config import LearningConfig
from .dynamics import monitor_limits, run_ase, run_lammps
from .selection import STRATEGIES
from .summary import test_metrics, write_summary
from .training import train_models, training_record


def log(message: str) -> None:
    print(f"[mdmonitor learn] {message}", file=sys.stderr, flush=True)


class ActiveLearning:
    """Runs the generations of a `LearningConfig` (see `mdmonitor.learning.config`)."""

    def __init__(self, config: LearningConfig, progress: bool = True):
        self.config = config
        self.root = config.directory
        self.progress = progress
        self.strategy = STRATEGIES[config["selection"]["strategy"]]()
        self.single = config["models"]["estimator"] != "committee"
        self._pool = None  # where boxes are labeled: opened by the first labeling of a run

    # --- the run directory ----------------------------------------------------------------------

    def generation(self, k: int) -> Path:
        return self.root / f"generation-{k:03d}"

    def _trained_on(self, k: int) -> Path:
        """The structures generation k's models were trained on."""
        return self.config.training_set() if k == 0 else self.generation(k - 1) / "train.extxyz"

    def state(self, k: int) -> dict:
        path = self.generation(k) / "state.json"
        return json.loads(path.read_text()) if path.is_file() else {"stage": "md"}

    def _advance(self, k: int, state: dict, stage: str) -> None:
        state["stage"] = stage
        write_atomically(self.generation(k) / "state.json", json.dumps(state, indent=1))
        log(f"generation {k}: {stage}")

    def models(self, k: int) -> list[Path]:
        count = 1 if self.single else len(self.config.model_files())
        return [self.generation(k) / "models" / f"model_{m}.model" for m in range(count)]

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        """Run (or resume) every generation; returns the summary rows."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._first_generation()
        test_file = self.config.file("test", "file")
        if test_file is not None and not (self.root / "start.json").is_file():
            write_atomically(self.root / "start.json", json.dumps(test_metrics(
                self.estimator(0), test_file, self.config["md"]["cutoff"])))
        try:
            for k in range(self.config["run"]["generations"]):
                state = self.state(k)
                if state["stage"] != "done":
                    self._run_generation(k, state)
                if state.get("stopped_reason"):
                    log(f"stopped after generation {k}: {state['stopped_reason']}")
                    break
        finally:  # (a LocalCluster's workers end with the run, also when a stage raised)
            if self._pool is not None:
                self._pool.close()
                self._pool = None
        return write_summary(self.root, self.config)

    def _first_generation(self) -> None:
        """generation-000/models, estimator and calibration from the config (copied once)."""
        models = self.models(0)
        for source, target in zip(self.config.model_files(), models):
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                with replaced_atomically(target) as temporary:
                    shutil.copy2(source, temporary)
        directory = self.generation(0)
        if self.single and not (directory / "estimator.npz").is_file():
            self._fit_estimator(0, self._trained_on(0), checkpoints=None)
        self._take_calibration()

    def _take_calibration(self) -> None:
        """generation-000/calibration.json: `models.calibration` (any map form), checked for
        generation 0's estimator, `md.cutoff` and the monitor's limits before it is copied. calibration.source.json records the
        file's SHA-256: until generation 0's MD has run, a changed (or removed) file replaces
        (or removes) the copy; after, the generation keeps the calibration its MD ran with."""
        directory = self.generation(0)
        copy, record = directory / "calibration.json", directory / "calibration.source.json"
        source, value = self.config.file("models", "calibration"), \
            self.config["models"]["calibration"]
        recorded = json.loads(record.read_text())["sha256"] if record.is_file() else None
        digest = None if source is None else file_sha256(source)
        if self.state(0)["stage"] != "md":
            if copy.is_file() and recorded is not None and digest != recorded:
                log(f"generation 0: models.calibration changed since its MD ran; the run keeps "
                    f"the calibration the MD ran with ({copy})")
            return
        if source is None:
            if copy.is_file():
                log("generation 0: no models.calibration any more: removing its copy")
            copy.unlink(missing_ok=True)
            record.unlink(missing_ok=True)
            return
        if copy.is_file() and digest == recorded:
            return
        try:
            calibration = Calibration.load(source)
            calibration.check(self.estimator(0), self.config["md"]["cutoff"])
            if self.config["md"]["engine"] == "ase":
                monitor_limits(self.config["md"], calibration)  # (refuses what it cannot watch)
        except ValueError as err:
            raise ValueError(f"{self.config.path}: models.calibration = '{value}' ({source}): "
                             f"{err}") from None
        if copy.is_file():
            log(f"generation 0: models.calibration = '{value}' changed: replacing its copy")
        with replaced_atomically(copy) as temporary:
            shutil.copy2(source, temporary)
        write_atomically(record, json.dumps({"file": str(source), "sha256": digest}))

    def _run_generation(self, k: int, state: dict) -> None:
        """Run generation k's stages from the one `state` records; each records the next."""
        stages = {"md": self._md, "label": self._label, "train": self._train,
                  "refit": self._refit}
        while state["stage"] in stages:
            stages[state["stage"]](k, state)

    def estimator(self, k: int):
        """The estimator of generation k's models."""
        if not self.single:
            return Committee.from_mace([str(p) for p in self.models(k)])
        return load_fitted(self.config["models"]["estimator"],
                           self.generation(k) / "estimator.npz", model=self.models(k)[0])

    def calibration(self, k: int) -> Calibration | None:
        path = self.generation(k) / "calibration.json"
        return Calibration.load(path) if path.is_file() else None

    # --- stages ---------------------------------------------------------------------------------

    def _md(self, k: int, state: dict) -> None:
        directory, md = self.generation(k), self.config["md"]
        for leftover in ("monitor.csv", "md.extxyz"):  # of an interrupted MD, run again
            (directory / leftover).unlink(missing_ok=True)
        shutil.rmtree(directory / "lammps", ignore_errors=True)
        start = time.perf_counter()
        frames = ase.io.read(self.config.file("md", "start"), index=":")
        atoms = frames[k % len(frames)]
        seed, run_id = self.config["run"]["seed"] * 1000 + k, f"gen{k:03d}"
        queue, estimator = directory / "candidates", self.estimator(k)
        selection = self.config["selection"]
        if md["engine"] == "ase":
            extractor = self.strategy.extractor(queue, selection, run_id, seed, atoms)
            outcome = run_ase(atoms, estimator, md, directory, seed, extractor,
                              self.calibration(k), progress=self.progress)
        else:
            extracting = selection if self.strategy.cuts_during_md(selection) else None
            outcome = run_lammps(atoms, estimator, md, extracting, directory, seed, run_id,
                                 self.calibration(k))
        boxes = outcome.boxes + self.strategy.after_md(
            directory / "md.extxyz", queue, selection, run_id, seed, estimator,
            training_set=self._trained_on(k))
        if self.config["test"]["boxes"]:
            state["test_boxes"] = self.strategy.test_boxes(
                directory / "md.extxyz", directory / "test-candidates", selection, run_id,
                seed, estimator, self.config["test"]["boxes"])
        after = selection["frames"] == "segments"  # (boxes chosen after the MD, not triggered)
        triggered = after or any(row["n_above_threshold"]  # (None and 0 alike: nothing above)
                                 for row in read_log(directory / "monitor.csv"))
        state.update(md_steps=outcome.steps, md_stopped=outcome.stopped, boxes=boxes,
                     triggered=triggered, seconds_md=round(time.perf_counter() - start, 1))
        if not triggered:
            state["stopped_reason"] = (f"the MD triggered no extraction in {outcome.steps} "
                                       "steps")
        self._advance(k, state, "label")

    def _label_queue(self, k: int, queue: Path) -> list:
        """Label the boxes of `queue` (resuming it) with the reference; its labeled frames."""
        reference, labeling = self.config["reference"], self.config["labeling"]
        if not queue.is_dir():
            return _read_frames(queue / "labeled.extxyz")
        self._requeue_reference_failures(k, CandidateQueue(queue))
        pending = CandidateQueue(queue).boxes("pending")  # (none: no cluster started)
        labeler = Labeler(queue, Reference(reference["calculator"], reference["parameters"]),
                          retries=labeling["retries"], timeout=labeling["timeout"],
                          pool=self._labeling_pool() if pending else InProcess(),
                          dask_log=self.root / "labeling.log",
                          say=lambda line: log(f"generation {k}: {line}"))
        labeler.run(progress=self.progress)
        return _read_frames(labeler.queue.dataset)

    def _label(self, k: int, state: dict) -> None:
        directory, start = self.generation(k), time.perf_counter()
        queue, reference = directory / "candidates", self.config["reference"]
        labeled = self._label_queue(k, queue)
        if self.config["test"]["boxes"]:  # (the grown test set: never trained on)
            tests = self._label_queue(k, directory / "test-candidates")
            _write_frames(directory / "test-boxes.extxyz", tests)
            state["test_boxes_labeled"] = len(tests)
        if not labeled and queue.is_dir():
            failures = _reference_failures(CandidateQueue(queue))
            if failures:
                raise ReferenceFailedOnEveryBox(
                    f"{self.config.path}: generation {k} labeled no box: reference.calculator "
                    f"= '{reference['calculator']}' failed on {len(failures)} (in "
                    f"{queue / 'failed'}), e.g. {next(iter(failures.values()))}; fix [reference] "
                    "and run again: those boxes are labeled again")
        _write_frames(directory / "labeled.extxyz", labeled)
        state.update(labeled=len(labeled), atoms_labeled=int(sum(len(a) for a in labeled)),
                     seconds_label=round(time.perf_counter() - start, 1))
        if not labeled and not state.get("stopped_reason"):
            state["stopped_reason"] = "no box passed the quality gates and the reference"
        self._advance(k, state, "done" if state.get("stopped_reason") else "train")

    def _train(self, k: int, state: dict) -> None:
        directory, start = self.generation(k), time.perf_counter()
        training, seed = self.config["training"], self.config["run"]["seed"]
        self._split(k)
        train_file, valid_file = directory / "train.extxyz", directory / "valid.extxyz"
        frames, validation, held = self._training_data(k)
        _write_frames(train_file, frames)
        _write_frames(valid_file, validation)
        state["validation"] = {"frames": len(validation), "held_out_labels": held}
        if not held:
            log(f"generation {k}: WARNING: the validation set holds none of the new labels "
                f"(training.holdout = {training['holdout']} of {state['labeled']} labeled "
                "frames); mace keeps the epoch of lowest validation loss on the initial data "
                "alone, which favours the starting weights")
        outputs = self.models(k + 1)
        for output in outputs:
            output.parent.mkdir(parents=True, exist_ok=True)
        members = [MaceModel(p) for p in self.models(k)]
        seeds = [seed * 1000 + 10 * (k + 1) + m for m in range(len(members))]
        work = [directory / "training" / f"model_{m}" for m in range(len(members))]
        log(f"generation {k}: training {len(members)} model(s) on {train_file} "
            f"({training['mode']}, {training['epochs']} epochs)")
        try:
            train_models(members, outputs, work, training, seeds, train_file, valid_file,
                         checkpoints=self._needs_checkpoints(), jobs=min(len(members), 2))
        finally:  # the trainer's logs, one after the other, also when one failed
            logs = [w / "train.log" for w in work if (w / "train.log").is_file()]
            records = {path.parent: training_record(path) for path in logs}
            write_atomically(directory / "train.log", "".join(
                f"=== {path.parent.name}: mace_run_train ===\n{_kept_line(records[path.parent])}"
                f"\n{path.read_text()}" for path in logs))
        state["training"] = [records[w] for w in work]
        state["kept"] = ("the last epoch (every epoch's checkpoint is kept for LTAU)"
                         if self._needs_checkpoints() else
                         "mace's checkpoint of lowest validation loss on valid.extxyz")
        for m, record in enumerate(state["training"]):
            log(f"generation {k}: model {m}: {_kept_line(record)}")
        state["seconds_train"] = round(time.perf_counter() - start, 1)
        self._advance(k, state, "refit")

    def _refit(self, k: int, state: dict) -> None:
        directory, start = self.generation(k), time.perf_counter()
        following = self.generation(k + 1)
        if self.single and not (following / "estimator.npz").is_file():
            self._fit_estimator(k + 1, self._trained_on(k + 1),
                                directory / "training" / "model_0" / "checkpoints")
        calibration = following / "calibration.json"
        held_out, window = self._held_out(k), self.config["calibration"]["window"]
        held_out = held_out[-window:] if window else held_out
        if not calibration.is_file() and len(held_out) >= 2:  # (a fit needs two frames)
            holdout = directory / "holdout-so-far.extxyz"
            _write_frames(holdout, held_out)
            # (alpha: the monitor's md.threshold stays a raw local uncertainty, and
            # md.error_threshold is converted by alpha for both engines)
            Calibration.fit(self.estimator(k + 1), holdout, self.config["md"]["cutoff"],
                            progress=self.progress, form="alpha").save(calibration)
        if self.config.file("test", "file") is not None:
            state["test"] = test_metrics(self.estimator(k + 1), self.config.file("test", "file"),
                                         self.config["md"]["cutoff"])
        grown = self.grown_test_set(k)
        if len(grown) >= 2:  # (test_metrics' Spearman needs two frames)
            _write_frames(directory / "test-so-far.extxyz", grown)
            state["grown_test"] = {"frames": len(grown), **test_metrics(
                self.estimator(k + 1), directory / "test-so-far.extxyz",
                self.config["md"]["cutoff"])}
        state["seconds_refit"] = round(time.perf_counter() - start, 1)
        self._advance(k, state, "done")
        write_summary(self.root, self.config)

    # --- helpers --------------------------------------------------------------------------------

    def _requeue_reference_failures(self, k: int, queue: CandidateQueue) -> None:
        """Before a generation has any label: move the boxes the reference failed on (a run
        that stopped with ReferenceFailedOnEveryBox) back to pending, to try the reference
        again (its settings may have been fixed). Boxes that failed a quality gate stay."""
        if queue.boxes("done"):
            return
        failures = _reference_failures(queue)
        for name in failures:
            queue.requeue(name, detail="the reference failed on every box; labeled again")
        if failures:
            log(f"generation {k}: {len(failures)} box(es) the reference failed on moved back to "
                "pending, to be labeled again")

    def _labeling_pool(self):
        """This run's pool of [labeling] workers (or this process), started once: a LocalCluster
        takes seconds to start, so it serves every generation until `run` ends."""
        if self._pool is None:
            labeling = self.config["labeling"]
            self._pool = open_pool(labeling["workers"], labeling["threads_per_worker"],
                                   labeling["scheduler"], log_file=self.root / "labeling.log",
                                   timeout=labeling["timeout"])
        return self._pool

    def _needs_checkpoints(self) -> bool:
        return self.config["models"]["estimator"] == "ltau"

    def _fit_estimator(self, k: int, structures: Path, checkpoints: Path | None) -> None:
        """The single-model estimator of generation k's model, into estimator.npz."""
        kind, model = self.config["models"]["estimator"], self.models(k)[0]
        output = self.generation(k) / "estimator.npz"
        log(f"generation {k}: fitting the {kind.upper()} estimator")
        if kind in ("llpr", "llpr-forces"):
            target = {"llpr": {}, "llpr-forces": {"target": "forces", "samples": 4}}[kind]
            LastLayerLPR.fit(model, structures, progress=self.progress, **target).save(output)
        elif kind == "gmm":
            LatentGMM.fit(model, structures, progress=self.progress).save(output)
        elif checkpoints is None:
            bundled = self.config["models"]["committee"] == "bundled"
            if not bundled:
                raise ValueError("estimator 'ltau' needs the training-error log of the first "
                                 "model: start from the bundled models, or fit-ltau yourself "
                                 "and use estimator 'committee'")
            LTAU.load(demo_models()["ltau"], model=model).save(output)
        else:
            errors = checkpoints.parent / "errors.npz"
            log_training_errors(model, checkpoints, structures, errors)
            LTAU.fit(model, structures, errors).save(output)

    def _split(self, k: int) -> None:
        """holdout.extxyz: a seeded fraction of generation k's labels kept out of training, for
        validation and calibration (at least one frame when two or more were labeled)."""
        directory = self.generation(k)
        labeled = ase.io.read(directory / "labeled.extxyz", index=":")
        fraction = self.config["training"]["holdout"]
        count = round(fraction * len(labeled))
        if fraction > 0 and len(labeled) >= 2:
            count = max(count, 1)
        rng = np.random.default_rng([self.config["run"]["seed"], k])
        held = set(rng.choice(len(labeled), size=count, replace=False).tolist())
        _write_frames(directory / "holdout.extxyz", [labeled[i] for i in sorted(held)])
        write_atomically(directory / "split.json", json.dumps({"holdout": sorted(held)}))

    def _labels(self, k: int, held_out: bool) -> list:
        """Every generation's labels up to k: the held-out ones, or the others."""
        frames = []
        for j in range(k + 1):
            directory = self.generation(j)
            if not (directory / "split.json").is_file():
                continue
            held = set(json.loads((directory / "split.json").read_text())["holdout"])
            labeled = ase.io.read(directory / "labeled.extxyz", index=":")
            frames += [a for i, a in enumerate(labeled) if (i in held) == held_out]
        return frames

    def grown_test_set(self, k: int) -> list:
        """The test boxes ([test] boxes) of generations 0..k, labeled."""
        return [frame for j in range(k + 1)
                for frame in _read_frames(self.generation(j) / "test-boxes.extxyz")]

    def _held_out(self, k: int) -> list:
        return self._labels(k, held_out=True)

    def _training_data(self, k: int) -> tuple[list, list, int]:
        """Generation k's training frames (the labels so far less the held-out ones, and a
        replay of the initial training set: `replay` frames per label, at least 4 batches,
        drawn anew with the generation's seed, or all of it) and validation frames (the
        held-out labels so far and as many initial frames, at least two, from the validation set
        or else drawn from the initial training set and left out of the replay); and the
        held-out label count."""
        training = self.config["training"]
        labels, held = self._labels(k, held_out=False), self._held_out(k)
        initial = ase.io.read(self.config.training_set(), index=":")
        rng = np.random.default_rng([self.config["run"]["seed"], k, 1])
        order = [int(i) for i in rng.permutation(len(initial))]
        count = max(len(held), 2)
        if self.config.validation_set() is not None:
            pool = ase.io.read(self.config.validation_set(), index=":")
            validation = [pool[i] for i in rng.permutation(len(pool))[:count]]
        else:
            validation, order = [initial[i] for i in order[:count]], order[count:]
        replay = training["replay"] or ("all" if training["mode"] == "scratch" else 4)
        if replay != "all":  # (at least 4 batches: a few labels do not make an epoch alone)
            order = order[:max(int(np.ceil(replay * len(labels))), 4 * training["batch_size"])]
        return [initial[i] for i in sorted(order)] + labels, held + validation, len(held)


def _kept_line(record: dict) -> str:
    """One line on what a training kept (its `training_record`)."""
    if record["kept_epoch"] is None:
        return "no model kept (the training did not finish)"
    line = f"kept epoch {record['kept_epoch']} of {record['epochs']}"
    if record["valid_force_rmse_kept"] is None or record["valid_force_rmse_start"] is None:
        return line
    return (f"{line}; validation force RMSE {1000 * record['valid_force_rmse_start']:.1f} -> "
            f"{1000 * record['valid_force_rmse_kept']:.1f} meV/A, loss "
            f"{record['valid_loss_start']:.4g} -> {record['valid_loss_kept']:.4g}")


class ReferenceFailedOnEveryBox(RuntimeError):
    """No box of a generation was labeled, and the reference failed on some: its settings are
    wrong, not the boxes."""


def _reference_failures(queue: CandidateQueue) -> dict[str, str]:
    """The failed boxes of `queue` that the reference failed on (it raised, died, overran its
    timeout or gave non-finite labels), by name, with the reason (one line)."""
    failures = {}
    for path in queue.boxes("failed"):
        try:
            info = ase.io.read(path, format="extxyz").info
        except Exception:  # (a box filed as it was, unreadable: not the reference's doing)
            continue
        reason = str(info.get("failure", ""))
        if "label_attempts" in info or reason.startswith("reference gave"):
            failures[path.name] = " ".join(reason.split())
    return failures


def _read_frames(path: Path) -> list:
    """The frames of extxyz file `path` (none if it is missing or empty)."""
    return ase.io.read(path, index=":") if path.is_file() and path.stat().st_size else []


def _write_frames(path: Path, frames: list) -> None:
    """Write extxyz `frames` to `path` atomically (an empty file for none)."""
    with replaced_atomically(path) as temporary:
        if frames:
            ase.io.write(temporary, frames, format="extxyz")
        else:
            temporary.write_text("")
