"""The model files a queued box records are hashed before the labeler unpickles them."""

import shutil

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mdmonitor import Committee
from mdmonitor.extraction.extractor import Extractor
from mdmonitor.labeling.labeler import Labeler
from mdmonitor.monitor import Trigger
from tests.pickled_code import file_sha256, save_code_pickle


@pytest.fixture
def queued_box(tmp_path, models):
    """A box left for the labeler to relax, cut with a committee of two copied model files."""
    files = [tmp_path / f"m{i}.model" for i in range(2)]
    for source, copied in zip(models["committee"], files):
        shutil.copy(source, copied)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=2)
    extractor = Extractor("cube", queue=tmp_path / "queue", core_radius=3.0, box_length=8.0,
                          relax="label")
    extractor.use_estimator(Committee.from_mace(files))
    local = np.linspace(1, 0, len(atoms))
    [name] = extractor(Trigger(0, None, atoms, local, local, np.array([0])))
    return tmp_path / "queue", name, files


def test_a_model_swapped_behind_a_queued_box_is_refused_before_it_is_unpickled(queued_box,
                                                                                tmp_path):
    queue, name, files = queued_box
    recorded = file_sha256(files[1])
    marker = tmp_path / "code-ran"
    save_code_pickle(files[1], marker)
    with pytest.raises(ValueError, match=(
            rf"model '{files[1]}' has changed since box '{name}' was cut \(SHA-256 "
            rf"{file_sha256(files[1])}, recorded {recorded}\); it was not loaded")):
        Labeler(queue, EMT()).run(progress=False)
    assert not marker.exists()
    assert (queue / "pending" / name).exists()


def test_a_box_recording_fewer_hashes_than_model_files_loads_none_of_them(queued_box,
                                                                           tmp_path):
    queue, name, files = queued_box
    box = ase.io.read(queue / "pending" / name)
    box.info["model_sha256"] = file_sha256(files[0])  # the second file's hash dropped
    ase.io.write(queue / "pending" / name, box, format="extxyz")
    marker = tmp_path / "code-ran"
    save_code_pickle(files[1], marker)
    with pytest.raises(ValueError, match=r"2 model files .* but 1 SHA-256 recorded for them"):
        Labeler(queue, EMT()).run(progress=False)
    assert not marker.exists()


def test_the_recorded_models_relax_the_box_when_unchanged(queued_box):
    queue, name, _ = queued_box
    summary = Labeler(queue, EMT()).run(progress=False)
    assert summary.labeled == [name]
    assert ase.io.read(queue / "done" / name).info["relaxation"] == "relaxed"
