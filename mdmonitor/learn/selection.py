"""What a generation sends to the reference: the selection strategies the loop compares.

- `uncertainty`: boxes cut around the most uncertain centres while the MD runs (the monitor's
  Extractor; Heid et al. 2024, Fig. 6), or after it, one from each segment of the trajectory
  (selection.frames = "segments", their Methods B);
- `random`: the same number of boxes, cut the same way around random atoms of random frames of
  the same MD (their baseline, Fig. 7), or of each segment;
- `whole-frame`: the MD frames with the highest maximum local uncertainty, labeled whole, as
  tools that label whole frames do (DP-GEN, FLARE);
- `pr-guided`: a pool of boxes cut like `uncertainty`'s (`pool` of them), of which the `boxes`
  that raise the LPR of the triggering centres the most are kept, the others skipped (Chong et
  al. 2024, Sec. 4.1; `mdmonitor.extraction.pr_selection`).

A strategy is a `Selection` with a `name`, `extractor(...)` (the Extractor to run during the
MD, or None), `after_md(...)` (boxes it writes, or skips, once the MD has run) and
`test_boxes(...)` (boxes for the grown test set, from the MD after selection.span);
`STRATEGIES` maps names to classes, so a new one slots in by adding a class here.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from ..estimators.llpr import LastLayerLPR
from ..extraction.candidates import CandidateQueue, box_name
from ..extraction.cutting import whole_frame_box
from ..extraction.extractor import Extractor, centre_numbers
from ..extraction.pr_selection import select_pending
from ..monitor import Trigger


def cube_extractor(queue: Path, selection: dict, run_id: str, seed: int,
                   max_boxes: int | None, atoms: Atoms) -> Extractor:
    """The Extractor all box strategies share for frames like `atoms`: a cube, border relaxed
    inline with the model (selection.box = "cube"; of whole molecules, of a fraction of the
    frame, as the selection says), or the environment in a host crystal, `samples` copies with a
    noisy buffer (selection.box = "host")."""
    common = dict(queue=queue, core_radius=selection["core_radius"],
                  max_per_frame=selection["max_per_frame"], max_boxes=max_boxes,
                  cooldown=selection["cooldown"], run_id=run_id, seed=seed,
                  centre_elements=selection["centres"])
    if selection["box"] == "host":
        return Extractor("host", host=selection["host"], n_samples=selection["samples"],
                         **common)
    size = {"box_length": selection["box_length"]}
    if selection["box_fraction"] is not None:
        units = (atoms.numbers != 1).sum() if selection["molecules"] else len(atoms)
        size = {"n_atoms": max(1, round(selection["box_fraction"] * units))}
    return Extractor("cube", relax="inline", molecules=selection["molecules"], **size, **common)


def monitored_frames(trajectory: Path) -> list:
    """The frames of md.extxyz that carry a local uncertainty."""
    if not trajectory.is_file():
        return []
    return [f for f in ase.io.read(trajectory, index=":", format="extxyz")
            if "local_uncertainty" in f.arrays]


def centres_of(atoms: Atoms, allowed: np.ndarray | None) -> np.ndarray:
    """Indices of the atoms of `atoms` that may be centres: of the atomic numbers `allowed`
    (None: every atom)."""
    return (np.arange(len(atoms)) if allowed is None
            else np.flatnonzero(np.isin(atoms.numbers, allowed)))


def segment_centres(frames: list, count: int, part: tuple[float, float], rng,
                    elements=None, most_uncertain: bool = True) -> list[tuple[Atoms, int]]:
    """One (frame, centre atom) from each of `count` equal segments of the frames within `part`
    (fractions of the trajectory, e.g. (0, 0.5)): the atom of highest local uncertainty of the
    segment, or a random atom of a random frame; centres among `elements` (symbols) only."""
    frames = frames[int(round(part[0] * len(frames))):int(round(part[1] * len(frames)))]
    allowed = centre_numbers(elements)
    chosen = []
    for segment in np.array_split(np.arange(len(frames)), count):
        if not len(segment):
            continue
        eligible = [centres_of(frames[i], allowed) for i in segment]
        if most_uncertain:
            peaks = [frames[i].arrays["local_uncertainty"][e].max() if len(e) else -np.inf
                     for i, e in zip(segment, eligible)]
            best = int(np.argmax(peaks))
            if not np.isfinite(peaks[best]):
                continue
            local = frames[segment[best]].arrays["local_uncertainty"]
            chosen.append((frames[segment[best]],
                           int(eligible[best][np.argmax(local[eligible[best]])])))
        else:
            pick = int(rng.integers(len(segment)))
            if len(eligible[pick]):
                chosen.append((frames[segment[pick]], int(rng.choice(eligible[pick]))))
    return chosen


def cut_at(extractor: Extractor, centres: list[tuple[Atoms, int]]) -> int:
    """Cut, check and queue the box around each (frame, centre); returns the boxes written (a
    box already queued before a restart is not written again)."""
    written = 0
    for frame, centre in centres:
        info = {"centre_local_uncertainty": float(frame.arrays["local_uncertainty"][centre])}
        written += extractor.extract_at(frame, centre, int(frame.info["step"]), 0,
                                        info) is not None
    extractor.close()
    return written


class Selection:
    """A strategy that extracts nothing during the MD and selects nothing after it; the
    strategies below override what they do."""

    name = ""
    most_uncertain = True  # segments: the most uncertain centre of a segment (else random)

    def cuts_during_md(self, selection: dict) -> bool:
        """Whether the strategy cuts boxes while the MD runs (with the monitor's Extractor, or
        the LAMMPS fix)."""
        return False

    def extractor(self, queue: Path, selection: dict, run_id: str, seed: int, atoms: Atoms):
        """The Extractor to attach to the MD of `atoms`, or None."""
        return None

    def segment_boxes(self, trajectory: Path, queue: Path, selection: dict, run_id: str,
                      seed: int, estimator, count: int, part: tuple[float, float]) -> int:
        """Cut `count` boxes from the segments of `part` of the MD (selection.frames =
        "segments") into `queue`; returns how many were written."""
        frames = monitored_frames(trajectory)
        if not frames:
            return 0
        rng = np.random.default_rng([seed, 2, int(1000 * part[0])])
        centres = segment_centres(frames, count, part, rng, selection["centres"],
                                  self.most_uncertain)
        # (no cool-down: the segments already spread the boxes over the MD)
        extractor = cube_extractor(queue, {**selection, "cooldown": 1}, run_id, seed,
                                   max_boxes=None, atoms=frames[0])
        extractor.use_estimator(estimator)
        return cut_at(extractor, centres)

    def test_boxes(self, trajectory: Path, queue: Path, selection: dict, run_id: str,
                   seed: int, estimator, count: int) -> int:
        """`count` boxes for the grown test set, cut as this strategy cuts its boxes, from the
        segments of the MD after selection.span (Heid et al.: its second half)."""
        return self.segment_boxes(trajectory, queue, selection, run_id, seed, estimator, count,
                                  (selection["span"], 1.0))

    def after_md(self, trajectory: Path, queue: Path, selection: dict, run_id: str, seed: int,
                 estimator, training_set=None) -> int:
        """Write boxes into `queue` from the MD's frames (or drop some the MD wrote); returns
        how many boxes it added (negative when it dropped some). `training_set`: the structures
        the estimator's models were trained on (file or list of Atoms), for strategies that
        need them."""
        return 0


class UncertaintySelection(Selection):
    name = "uncertainty"

    def cuts_during_md(self, selection: dict) -> bool:
        return selection["frames"] != "segments"

    def extractor(self, queue: Path, selection: dict, run_id: str, seed: int,
                  atoms: Atoms) -> Extractor | None:
        if not self.cuts_during_md(selection):
            return None
        return cube_extractor(queue, selection, run_id, seed, selection["boxes"], atoms)

    def after_md(self, trajectory: Path, queue: Path, selection: dict, run_id: str, seed: int,
                 estimator, training_set=None) -> int:
        """selection.frames = "segments": a box around the most uncertain centre of each
        segment of the first `span` of the MD."""
        if selection["frames"] != "segments":
            return 0
        return self.segment_boxes(trajectory, queue, selection, run_id, seed, estimator,
                                  selection["boxes"], (0.0, selection["span"]))


class RandomSelection(Selection):
    name = "random"
    most_uncertain = False

    def after_md(self, trajectory: Path, queue: Path, selection: dict, run_id: str, seed: int,
                 estimator, training_set=None) -> int:
        """Cut `boxes` cubes around a random atom (of selection.centres) of each of as many
        random frames (selection.frames = "segments": of a random frame of each segment of the
        first `span` of the MD)."""
        if selection["frames"] == "segments":
            return self.segment_boxes(trajectory, queue, selection, run_id, seed, estimator,
                                      selection["boxes"], (0.0, selection["span"]))
        frames = monitored_frames(trajectory)
        if not frames:
            return 0
        rng = np.random.default_rng([seed, 1])
        count = selection["boxes"]
        chosen = rng.choice(len(frames), size=count, replace=count > len(frames))
        # no cool-down: random centres are independent of where earlier boxes were cut
        extractor = cube_extractor(queue, {**selection, "cooldown": 1}, run_id, seed,
                                   max_boxes=None, atoms=frames[0])
        extractor.use_estimator(estimator)
        allowed = centre_numbers(selection["centres"])
        written = 0
        for index in chosen:
            frame = frames[index]
            eligible = centres_of(frame, allowed)
            atom = int(rng.choice(eligible))
            local = frame.arrays["local_uncertainty"]
            written += len(extractor(Trigger(int(frame.info["step"]), None, frame,
                                             frame.arrays["atomic_uncertainty"], local,
                                             np.array([atom]))))
        extractor.close()
        return written


class WholeFrameSelection(Selection):
    name = "whole-frame"

    def after_md(self, trajectory: Path, queue: Path, selection: dict, run_id: str, seed: int,
                 estimator, training_set=None) -> int:
        """Queue the `boxes` frames with the highest maximum local uncertainty, whole."""
        frames = monitored_frames(trajectory)
        peaks = [float(f.arrays["local_uncertainty"].max()) for f in frames]
        queue = CandidateQueue(queue)
        written = 0
        for index in np.argsort(peaks, kind="stable")[::-1][:selection["boxes"]]:
            frame = frames[index]
            local = frame.arrays["local_uncertainty"]
            centre = int(np.argmax(local))
            name = box_name(run_id, int(frame.info["step"]), centre)
            if queue.stage_of(name) is not None:
                continue  # written before a restart
            box = whole_frame_box(frame)
            box.info.update(run_id=run_id, source_step=int(frame.info["step"]), centre_index=centre,
                            centre_local_uncertainty=float(local[centre]))
            queue.write(box, name, "pending", "written")
            written += 1
        return written


def pool_size(selection: dict) -> int:
    """Candidate boxes the pr-guided MD cuts: `pool`, by default three per box kept."""
    return selection["pool"] or 3 * selection["boxes"]


def rigidity_model(estimator, training_set=None) -> LastLayerLPR:
    """The LLPR that guides the choice: the estimator itself, or for a committee of MACE models
    that of member 0, fitted on `training_set` (the structures the members were trained on)."""
    if isinstance(estimator, LastLayerLPR):
        return estimator
    models = getattr(estimator, "models", None)
    if not models:
        raise ValueError(f"selection 'pr-guided' needs an LLPR or a committee of MACE models, "
                         f"not a {type(estimator).__name__} estimator")
    if training_set is None:
        raise ValueError("selection 'pr-guided' with a committee fits the LLPR of member 0: "
                         "give the members' training set (training_set=...)")
    return LastLayerLPR.fit(models[0], training_set, progress=False)


class PRGuidedSelection(Selection):
    name = "pr-guided"

    def cuts_during_md(self, selection: dict) -> bool:
        return True

    def extractor(self, queue: Path, selection: dict, run_id: str, seed: int,
                  atoms: Atoms) -> Extractor:
        return cube_extractor(queue, selection, run_id, seed, pool_size(selection), atoms)

    def after_md(self, trajectory: Path, queue: Path, selection: dict, run_id: str, seed: int,
                 estimator, training_set=None) -> int:
        """Keep the `boxes` pending boxes that raise the targets' LPR the most (until
        `rigidity_limit`), skip the others. Returns the boxes kept minus those the run cut (in
        any stage), so that the MD's count plus this is the boxes kept, also when rerun after a
        restart (the skipped boxes are not cut again)."""
        if not (Path(queue) / "pending").is_dir():
            return 0
        queue = CandidateQueue(queue)
        cut = len(queue.source_steps(run_id))
        if not queue.boxes("pending"):
            return 0
        outcome = select_pending(queue, rigidity_model(estimator, training_set),
                                 selection["boxes"], selection["rigidity_limit"])
        return len(outcome.chosen) - cut


STRATEGIES = {cls.name: cls for cls in (UncertaintySelection, RandomSelection,
                                        WholeFrameSelection, PRGuidedSelection)}
