"""A calibration refitted on a queue's labels as they come in (`mdmonitor label --calibrate`),
for the committee whose models the boxes record (issue 25 item 5)."""

import signal
import subprocess
import sys
import time

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mdmonitor import Calibration
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.labeling.labeler import Labeler
from mdmonitor.labeling.refit import CalibrationRefit, recorded_committee
from mdmonitor.monitor import Trigger
from mdmonitor.quality.calibration import FewFramesWarning


def cut_boxes(root, estimator, centres, seed=2):
    """Embedded boxes (no relaxation) around `centres` of a hot Cu crystal, recording the
    models of `estimator`."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=seed)
    extractor = Extractor("embed", queue=root, core_radius=4.0, max_per_frame=len(centres),
                          separation=0.1, seed=seed)
    extractor.use_estimator(estimator)
    local = np.linspace(1, 0, len(atoms))
    return extractor(Trigger(seed, None, atoms, local, local, np.array(centres)))


def direct_fit(estimator, frames):
    with pytest.warns(FewFramesWarning):
        return Calibration.fit(estimator, frames, 4.0, progress=False, form="alpha")


def test_label_watch_refits_the_calibration_as_boxes_are_labeled(tmp_path, committee):
    queue, calibration = CandidateQueue(tmp_path / "q"), tmp_path / "calibration.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "mdmonitor.cli", "label", str(queue.root), "--reference",
         "ase.calculators.emt:EMT", "--watch", "--poll", "0.2", "--no-progress",
         "--calibrate", str(calibration)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        names = cut_boxes(queue.root, committee, (0, 40, 80))
        deadline = time.time() + 180
        while time.time() < deadline and not (
                calibration.is_file() and Calibration.load(calibration).n_frames == len(names)):
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    refitted = Calibration.load(calibration)
    refitted.check(committee, 4.0)  # for the committee recorded in the boxes, at --cutoff
    labeled = ase.io.read(queue.dataset, index=":")
    assert sorted(f.info["box"] for f in labeled) == sorted(names)
    expected = direct_fit(committee, labeled)
    assert refitted.n_frames == 3 and refitted.form == "alpha"
    assert refitted.alpha == pytest.approx(expected.alpha, rel=1e-9)
    assert refitted.mean_error == pytest.approx(expected.mean_error, rel=1e-9)
    # refitted once the second box was labeled, then again after the third
    lines = [line for line in err.splitlines() if line.startswith(f"{calibration}: calibration")]
    assert len(lines) == 2 and f"calibration {refitted.digest}, alpha map" in lines[-1]


def test_a_window_fits_the_last_frames_only_and_each_frame_is_predicted_once(tmp_path, committee,
                                                                            monkeypatch):
    queue = CandidateQueue(tmp_path / "q")
    names = cut_boxes(queue.root, committee, (0, 40, 80, 100))
    refit = CalibrationRefit(tmp_path / "calibration.json", cutoff=4.0, window=2)
    fits = []
    labeler = Labeler(queue, EMT(),
                      on_labeled=lambda new: fits.append((new, refit.update(queue.dataset))))
    calls = []
    predict = type(committee).predict
    monkeypatch.setattr(type(committee), "predict",
                        lambda self, atoms, **kw: calls.append(1) or predict(self, atoms, **kw))
    assert sorted(labeler.run(progress=False).labeled) == sorted(names)
    # one batch per box in this process: nothing to fit on one frame, then a fit per box
    assert [new for new, _ in fits] == [[name] for name in sorted(names)]
    assert fits[0][1] is None and all(c is not None for _, c in fits[1:])
    assert len(calls) == len(names)  # (the window's frames are not predicted again)
    labeled = ase.io.read(queue.dataset, index=":")
    written = Calibration.load(tmp_path / "calibration.json")
    assert written.n_frames == 2 and written.source.endswith("last 2 of 4 frames")
    last_two, every = direct_fit(committee, labeled[-2:]), direct_fit(committee, labeled)
    assert written.alpha == pytest.approx(last_two.alpha, rel=1e-9)
    assert abs(written.alpha / every.alpha - 1) > 1e-3  # (the window made a difference)


def test_the_recorded_committee_is_the_boxes_models_and_one_model_is_refused(tmp_path,
                                                                           committee, llpr):
    cut_boxes(tmp_path / "a", committee, (0,))
    (box,) = ase.io.read(CandidateQueue(tmp_path / "a").boxes("pending")[0], index=":")
    assert ([m.sha256() for m in recorded_committee(box).models]
            == [m.sha256() for m in committee.models])
    cut_boxes(tmp_path / "b", llpr, (0,))
    (box,) = ase.io.read(CandidateQueue(tmp_path / "b").boxes("pending")[0], index=":")
    with pytest.raises(ValueError, match="records 1 model file.*give the estimator the monitor "
                                         "runs"):
        recorded_committee(box)
