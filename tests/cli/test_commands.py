"""The `mdmonitor` command line: help, md, fit-llpr, demo, and clear errors."""

import csv
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from mdmonitor import LastLayerLPR
from mdmonitor.cli import main
from mdmonitor.cli.monitoring import EXIT_STOPPED
from mdmonitor.demo import run_demo


@pytest.mark.parametrize("command", [[], ["demo"], ["md"], ["fit-llpr"], ["label"], ["select"],
                                     ["adversarial"], ["lammps"], ["lammps-thresholds"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "usage: mdmonitor" in capsys.readouterr().out


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "mdmonitor.cli", "--help"],
                            capture_output=True, text=True, check=True)
    assert "fit-llpr" in result.stdout


def test_md_writes_log_and_frames_with_uncertainties(models, cu_bulk, tmp_path):
    ase.io.write(tmp_path / "start.extxyz", cu_bulk)
    code = main(["md", str(tmp_path / "start.extxyz"), "--committee", *models["committee"],
                 "--steps", "6", "--frame-interval", "3", "--log", str(tmp_path / "m.csv"),
                 "--trajectory", str(tmp_path / "t.extxyz"), "--temperature", "600"])
    assert code == 0
    with open(tmp_path / "m.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 7
    frames = ase.io.read(tmp_path / "t.extxyz", index=":")
    assert [f.info["step"] for f in frames] == [0, 3, 6]
    assert frames[-1].arrays["local_uncertainty"].shape == (len(cu_bulk),)


def test_md_exits_with_status_3_when_the_stop_threshold_is_crossed(models, cu_bulk, tmp_path,
                                                                   capsys):
    ase.io.write(tmp_path / "start.extxyz", cu_bulk)
    code = main(["md", str(tmp_path / "start.extxyz"), "--llpr", models["llpr"], "--steps", "5",
                 "--stop-threshold", "1e-9", "--log", str(tmp_path / "m.csv"),
                 "--trajectory", str(tmp_path / "t.extxyz")])
    assert code == EXIT_STOPPED
    assert "exceeds stop_threshold" in capsys.readouterr().err


def test_md_cuts_boxes_that_label_turns_into_training_data(models, tmp_path, capsys):
    start = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    ase.io.write(tmp_path / "start.extxyz", start)
    queue = tmp_path / "queue"
    code = main(["md", str(tmp_path / "start.extxyz"), "--llpr", models["llpr"], "--steps", "4",
                 "--threshold", "1e-9", "--extract", "cluster", "--core-radius", "3",
                 "--queue", str(queue), "--max-boxes", "2", "--log", str(tmp_path / "m.csv"),
                 "--trajectory", str(tmp_path / "t.extxyz")])
    assert code == 0
    assert "2 boxes in" in capsys.readouterr().out
    assert main(["label", str(queue), "--reference", "ase.calculators.emt:EMT"]) == 0
    labeled = ase.io.read(queue / "labeled.extxyz", index=":")
    assert len(labeled) == 2 and labeled[0].info["config_type"] == "mdmonitor-cluster"
    assert not labeled[0].pbc.any()
    assert main(["label", str(queue), "--reference", "ase.calculators.nope:X"]) == 1
    assert "cannot import module 'ase.calculators.nope'" in capsys.readouterr().err


def test_fit_llpr_writes_a_loadable_file(models, cu_bulk, tmp_path):
    ase.io.write(tmp_path / "train.extxyz", [cu_bulk, cu_bulk.copy()])
    out = tmp_path / "llpr.npz"
    assert main(["fit-llpr", models["committee"][0], str(tmp_path / "train.extxyz"),
                 "-o", str(out), "--no-forces"]) == 0
    assert LastLayerLPR.load(out, model=models["committee"][0]).n_structures == 2


def test_missing_model_file_is_a_clear_error(cu_bulk, tmp_path, capsys):
    ase.io.write(tmp_path / "start.extxyz", cu_bulk)
    code = main(["md", str(tmp_path / "start.extxyz"), "--committee",
                 str(tmp_path / "a.model"), str(tmp_path / "b.model")])
    assert code == 1
    assert "a.model' does not exist" in capsys.readouterr().err


def test_demo_finds_the_uncertainty_at_the_surface(tmp_path):
    summary = run_demo(tmp_path, steps=20, threshold=0.01, progress=False)
    assert summary["surface_mean"] > summary["bulk_mean"]
    for path in summary["files"]:
        assert Path(path).stat().st_size > 0
    assert np.isfinite(summary["top_atoms"][0][3])
    # the boxes cut around the most uncertain atoms were relaxed, labeled by EMT and compared
    assert 1 <= len(summary["boxes"]) <= 4 and not summary["failed_boxes"]
    for name, step, centre, uncertainty, error in summary["boxes"]:
        assert uncertainty > 0.01 and 0 < error < 1.0


def test_langevin_example_runs_and_reports_triggers(tmp_path):
    script = Path(__file__).parents[2] / "examples" / "monitored_langevin.py"
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, check=True)
    assert "atoms above threshold" in result.stdout
    with open(tmp_path / "monitor.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == list(range(0, 101, 10))
