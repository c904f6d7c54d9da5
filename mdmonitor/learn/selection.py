"""What a generation sends to the reference: the selection strategies the loop compares.

- `uncertainty`: boxes cut around the most uncertain centres while the MD runs (the monitor's
  Extractor; Heid et al. 2024, Fig. 6);
- `random`: the same number of boxes, cut the same way around random atoms of random frames of
  the same MD (their baseline, Fig. 7);
- `whole-frame`: the MD frames with the highest maximum local uncertainty, labeled whole, as
  tools that label whole frames do (DP-GEN, FLARE);
- `pr-guided`: a pool of boxes cut like `uncertainty`'s (`pool` of them), of which the `boxes`
  that raise the LPR of the triggering centres the most are kept, the others skipped (Chong et
  al. 2024, Sec. 4.1; `mdmonitor.extraction.pr_selection`).

A strategy is a `Selection` with a `name`, `extractor(...)` (the Extractor to run during the
MD, or None) and `after_md(...)` (boxes it writes, or skips, once the MD has run);
`STRATEGIES` maps names to classes, so a new one slots in by adding a class here.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np

from ..estimators.llpr import LastLayerLPR
from ..extraction.candidates import CandidateQueue, box_name
from ..extraction.cutting import whole_frame_box
from ..extraction.extractor import Extractor
from ..extraction.pr_selection import select_pending
from ..monitor import Trigger


def cube_extractor(queue: Path, selection: dict, run_id: str, seed: int,
                   max_boxes: int | None) -> Extractor:
    """The Extractor all box strategies share: a cube, border relaxed inline with the model
    (selection.box = "cube"), or the environment in a host crystal, `samples` copies with a
    noisy buffer (selection.box = "host")."""
    common = dict(queue=queue, core_radius=selection["core_radius"],
                  max_per_frame=selection["max_per_frame"], max_boxes=max_boxes,
                  cooldown=selection["cooldown"], run_id=run_id, seed=seed)
    if selection["box"] == "host":
        return Extractor("host", host=selection["host"], n_samples=selection["samples"],
                         **common)
    return Extractor("cube", box_length=selection["box_length"], relax="inline", **common)


def monitored_frames(trajectory: Path) -> list:
    """The frames of md.extxyz that carry a local uncertainty."""
    if not trajectory.is_file():
        return []
    return [f for f in ase.io.read(trajectory, index=":", format="extxyz")
            if "local_uncertainty" in f.arrays]


class Selection:
    """A strategy that extracts nothing during the MD and selects nothing after it; the
    strategies below override what they do."""

    name = ""

    def extractor(self, queue: Path, selection: dict, run_id: str, seed: int):
        """The Extractor to attach to the MD's monitor, or None."""
        return None

    def after_md(self, trajectory: Path, queue: Path, selection: dict, run_id: str, seed: int,
                 estimator, training_set=None) -> int:
        """Write boxes into `queue` from the MD's frames (or drop some the MD wrote); returns
        how many boxes it added (negative when it dropped some). `training_set`: the structures
        the estimator's models were trained on (file or list of Atoms), for strategies that
        need them."""
        return 0


class UncertaintySelection(Selection):
    name = "uncertainty"

    def extractor(self, queue: Path, selection: dict, run_id: str, seed: int) -> Extractor:
        return cube_extractor(queue, selection, run_id, seed, selection["boxes"])


class RandomSelection(Selection):
    name = "random"

    def after_md(self, trajectory: Path, queue: Path, selection: dict, run_id: str, seed: int,
                 estimator, training_set=None) -> int:
        """Cut `boxes` cubes around a random atom of each of as many random frames."""
        frames = monitored_frames(trajectory)
        if not frames:
            return 0
        rng = np.random.default_rng([seed, 1])
        count = selection["boxes"]
        chosen = rng.choice(len(frames), size=count, replace=count > len(frames))
        # no cool-down: random centres are independent of where earlier boxes were cut
        extractor = cube_extractor(queue, {**selection, "cooldown": 1}, run_id, seed,
                                   max_boxes=None)
        extractor.use_estimator(estimator)
        written = 0
        for index in chosen:
            frame = frames[index]
            atom = int(rng.integers(len(frame)))
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

    def extractor(self, queue: Path, selection: dict, run_id: str, seed: int) -> Extractor:
        return cube_extractor(queue, selection, run_id, seed, pool_size(selection))

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
