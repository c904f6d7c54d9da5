"""What a generation sends to the reference: the selection strategies the loop compares.

- `uncertainty`: boxes cut around the most uncertain centres while the MD runs (the monitor's
  Extractor; Heid et al. 2024, Fig. 6);
- `random`: the same number of boxes, cut the same way around random atoms of random frames of
  the same MD (their baseline, Fig. 7);
- `whole-frame`: the MD frames with the highest maximum local uncertainty, labeled whole, as
  tools that label whole frames do (DP-GEN, FLARE).

A strategy is a `Selection` with a `name`, `extractor(...)` (the Extractor to run during the
MD, or None) and `after_md(...)` (boxes it writes once the MD has run); `STRATEGIES` maps names
to classes, so a new one (e.g. PR-guided) slots in by adding a class here.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from ..extraction.candidates import CandidateQueue, box_name
from ..extraction.extractor import Extractor
from ..monitor import Trigger


def cube_extractor(queue: Path, selection: dict, run_id: str, seed: int,
                   max_boxes: int | None) -> Extractor:
    """The cube Extractor all box strategies share (border relaxed inline with the model)."""
    return Extractor("cube", queue=queue, core_radius=selection["core_radius"],
                     box_length=selection["box_length"],
                     max_per_frame=selection["max_per_frame"], max_boxes=max_boxes,
                     cooldown=selection["cooldown"], relax="inline", run_id=run_id, seed=seed)


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
                 estimator) -> int:
        """Write boxes into `queue` from the MD's frames; returns how many."""
        return 0


class UncertaintySelection(Selection):
    name = "uncertainty"

    def extractor(self, queue: Path, selection: dict, run_id: str, seed: int) -> Extractor:
        return cube_extractor(queue, selection, run_id, seed, selection["boxes"])


class RandomSelection(Selection):
    name = "random"

    def after_md(self, trajectory: Path, queue: Path, selection: dict, run_id: str, seed: int,
                 estimator) -> int:
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
                 estimator) -> int:
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
            box = Atoms(frame.numbers, frame.positions, cell=frame.cell, pbc=frame.pbc)
            box.arrays["core_mask"] = np.ones(len(box), bool)  # every atom is the source's
            box.arrays["source_index"] = np.arange(len(box))
            box.info.update(strategy="whole-frame", relaxation="none", run_id=run_id,
                            source_step=int(frame.info["step"]), centre_index=centre,
                            centre_local_uncertainty=float(local[centre]))
            queue.write(box, name, "pending", "written")
            written += 1
        return written


STRATEGIES = {cls.name: cls for cls in (UncertaintySelection, RandomSelection,
                                        WholeFrameSelection)}
