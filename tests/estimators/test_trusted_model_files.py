"""Model files named by estimator files are hashed before they are unpickled; MACE checkpoints
are read as weights only."""

import argparse
import copy
import shutil

import numpy as np
import pytest
import torch
from mace.tools.checkpoint import CheckpointHandler, CheckpointState
from mace.tools.scripts_utils import LRScheduler

from mdmonitor import LastLayerLPR
from mdmonitor.estimators.ltau import log_training_errors
from mdmonitor.common.trusted_pickles import ModelFileChanged
from mdmonitor.estimators.mace_model import MaceModel
from tests.pickled_code import file_sha256, save_code_pickle


@pytest.fixture
def llpr_copy(tmp_path, models):
    """The bundled LLPR file alone in a directory, where its model file is expected."""
    path = tmp_path / "cu_llpr.npz"
    shutil.copy(models["llpr"], path)
    return path


def test_a_model_swapped_next_to_an_estimator_file_is_refused_before_it_is_unpickled(
        llpr_copy, tmp_path):
    marker = tmp_path / "code-ran"
    swapped = save_code_pickle(tmp_path / "cu_committee_0.model", marker)
    with pytest.raises(ValueError, match=(
            rf"'{llpr_copy}' was fitted for another model than '{swapped}' \(SHA-256 "
            rf"{file_sha256(swapped)}, fitted for 219e5032d733.*\); the model was not loaded")):
        LastLayerLPR.load(llpr_copy)
    assert not marker.exists()
    given = save_code_pickle(tmp_path / "given.model", marker)
    with pytest.raises(ValueError, match=f"another model than '{given}'"):
        LastLayerLPR.load(llpr_copy, model=given)
    assert not marker.exists()


def test_the_recorded_model_next_to_an_estimator_file_loads_and_predicts_the_same(
        llpr_copy, models, llpr, cu_bulk):
    shutil.copy(models["committee"][0], llpr_copy.parent / "cu_committee_0.model")
    loaded = LastLayerLPR.load(llpr_copy)
    assert loaded.model.sha256() == file_sha256(models["committee"][0])
    ours, bundled = loaded.predict(cu_bulk), llpr.predict(cu_bulk)
    assert ours.energy == bundled.energy
    np.testing.assert_array_equal(ours.atomic_uncertainty, bundled.atomic_uncertainty)


def test_a_model_file_is_hashed_and_then_those_bytes_loaded(models, tmp_path):
    path = models["committee"][1]
    digest = file_sha256(path)
    assert MaceModel(path, sha256=digest).sha256() == digest
    marker = tmp_path / "code-ran"
    code = save_code_pickle(tmp_path / "m.model", marker)
    with pytest.raises(ModelFileChanged, match=rf"'{code}' has SHA-256 {file_sha256(code)}, "
                                               rf"not the recorded {digest}") as caught:
        MaceModel(code, sha256=digest)
    assert (caught.value.path, caught.value.expected) == (code, digest)
    assert not marker.exists()


def labeled_frames(models, cu_bulk):
    frames = [cu_bulk.copy() for _ in range(2)]
    frames[1].rattle(0.1, seed=9)
    reference = MaceModel(models["committee"][3])
    for frame in frames:
        frame.arrays["REF_forces"] = reference.predict(frame).forces
    return frames


def test_log_errors_reads_a_checkpoint_as_mace_writes_it_with_optimizer_and_scheduler(
        models, cu_bulk, tmp_path):
    """One Adam (AMSGrad) step and a ReduceLROnPlateau step, saved by MACE's own
    CheckpointHandler: the weights-only loader reads it, and the errors are the stepped
    network's."""
    frames = labeled_frames(models, cu_bulk)
    model = MaceModel(models["committee"][0])
    network = copy.deepcopy(model.module)
    for parameter in network.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01, amsgrad=True)
    scheduler = LRScheduler(optimizer, argparse.Namespace(
        scheduler="ReduceLROnPlateau", optimizer="adam", lr_factor=0.8, scheduler_patience=50))
    network(model.graph(frames), compute_force=False)["energy"].sum().backward()
    optimizer.step()
    scheduler.step(metrics=1.0)
    CheckpointHandler(directory=str(tmp_path), tag="cu_run-1", keep=True).save(
        CheckpointState(network, optimizer, scheduler), epochs=0)
    checkpoint = torch.load(tmp_path / "cu_run-1_epoch-0.pt", weights_only=True)
    assert set(checkpoint) == {"model", "optimizer", "lr_scheduler"}
    assert checkpoint["optimizer"]["state"]  # Adam's moments: a real optimizer state
    torch.save(network, tmp_path / "stepped.model")
    stepped = MaceModel(tmp_path / "stepped.model")
    expected = np.concatenate([np.linalg.norm(stepped.predict(f).forces - f.arrays["REF_forces"],
                                              axis=1) for f in frames])
    unstepped = np.concatenate([np.linalg.norm(model.predict(f).forces - f.arrays["REF_forces"],
                                               axis=1) for f in frames])
    errors = log_training_errors(model, tmp_path, frames, tmp_path / "e.npz")
    np.testing.assert_allclose(errors, [expected], rtol=1e-10)
    assert np.abs(errors[0] - unstepped).max() > 1e-6  # the step changed the weights


def test_log_errors_refuses_a_checkpoint_holding_pickled_code(models, cu_bulk, tmp_path):
    frames = labeled_frames(models, cu_bulk)
    marker = tmp_path / "code-ran"
    torch.save({"model": MaceModel(models["committee"][0]).module.state_dict()},
               tmp_path / "cu_run-1_epoch-0.pt")
    bad = save_code_pickle(tmp_path / "cu_run-1_epoch-1.pt", marker,
                           wrap=lambda code: {"model": {}, "optimizer": code})
    with pytest.raises(ValueError, match=rf"MACE checkpoint '{bad}' holds more than tensors "
                                         r"and plain containers.*refused \(.*posix\b"):
        log_training_errors(models["committee"][0], tmp_path, frames, tmp_path / "e.npz")
    assert not marker.exists()
    assert not (tmp_path / "e.npz").exists()
