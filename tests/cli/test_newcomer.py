"""What a newcomer meets on the command line: one line per error with its exit status (130 for
Ctrl-C), tracebacks only on request, --version, and `md` that never mixes two runs' files."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import pytest

from mdmonitor.cli import EXIT_ERROR, EXIT_INTERRUPTED, main

MDMONITOR = [sys.executable, "-m", "mdmonitor.cli"]


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture
def start(cu_bulk, tmp_path) -> str:
    path = tmp_path / "start.extxyz"
    ase.io.write(path, cu_bulk)
    return str(path)


def md_files(tmp_path) -> list[str]:
    return ["--log", str(tmp_path / "m.csv"), "--trajectory", str(tmp_path / "t.extxyz")]


def test_version_names_the_installed_package(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == "mdmonitor 0.1.0"


@pytest.mark.parametrize("name, content, reason", [
    ("notes.txt", "hello\n", "UnknownFileTypeError: txt"),
    ("blank.extxyz", "\n\n", "holds no structures"),  # ASE: StopIteration
    ("garbage.xyz", "garbage\nfoo\n", "XYZError"),
    ("junk.cif", "junk\n", "AssertionError")])
def test_a_file_that_is_no_structure_is_one_line_naming_it(name, content, reason, models,
                                                            tmp_path, capsys):
    (tmp_path / name).write_text(content)
    code = main(["md", str(tmp_path / name), "--llpr", models["llpr"], *md_files(tmp_path)])
    assert code == EXIT_ERROR
    [line] = error_lines(capsys)
    assert line.startswith("mdmonitor md: error: ") and name in line and reason in line


@pytest.mark.parametrize("folder, message", [
    ("missing", "checkpoint directory '{}' does not exist"),
    ("empty", "no MACE checkpoint files (*_epoch-N.pt) in directory '{}'")])
def test_log_errors_without_checkpoints_names_the_folder(folder, message, models, tmp_path,
                                                         capsys):
    checkpoints = tmp_path / folder
    if folder == "empty":
        checkpoints.mkdir()
    code = main(["log-errors", models["committee"][0], str(checkpoints),
                 models["training_set"], "-o", str(tmp_path / "errors.npz")])
    assert code == EXIT_ERROR
    [line] = error_lines(capsys)
    assert message.format(checkpoints) in line and "generator" not in line


def test_debug_shows_the_traceback(models, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("hello\n")
    command = ["md", str(tmp_path / "notes.txt"), "--llpr", models["llpr"]]
    with pytest.raises(ValueError, match="cannot read structures"):
        main(["--debug", *command])
    monkeypatch.setenv("MDMONITOR_DEBUG", "1")
    with pytest.raises(ValueError, match="cannot read structures"):
        main(command)


def test_a_queue_that_cannot_be_created_is_one_line(start, models, tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory\n")
    queue = tmp_path / "file" / "queue"
    code = main(["md", start, "--llpr", models["llpr"], "--steps", "2", "--threshold", "1e-9",
                 "--extract", "cluster", "--queue", str(queue), *md_files(tmp_path)])
    assert code == EXIT_ERROR
    [line] = error_lines(capsys)
    assert line.startswith("mdmonitor md: error: Not a directory: ") and str(queue) in line


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 32 KiB tmpfs (needs the right to mount; skipped without it)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs",
                              str(mount_point)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.parametrize("state, message", [("full", "No space left on device: "),
                                            ("read-only", "Read-only file system: ")])
def test_a_full_or_read_only_queue_stops_md_with_one_line(state, message, tiny_filesystem,
                                                          start, models, tmp_path, capsys):
    queue = tiny_filesystem / "queue"
    if state == "read-only":
        queue.mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(tiny_filesystem)], check=True)
    code = main(["md", start, "--llpr", models["llpr"], "--steps", "200", "--threshold", "1e-9",
                 "--extract", "cluster", "--core-radius", "3", "--queue", str(queue),
                 *md_files(tmp_path)])
    assert code == EXIT_ERROR
    lines = error_lines(capsys)
    assert lines[-1].startswith(f"mdmonitor md: error: {message}") and str(queue) in lines[-1]
    assert not any("Traceback" in line for line in lines)


def lines_in(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_ctrl_c_in_md_is_one_line_and_exit_status_130(start, models, tmp_path):
    """A real process, interrupted as a terminal does: SIGINT to its process group."""
    log = tmp_path / "m.csv"
    md = subprocess.Popen([*MDMONITOR, "md", start, "--llpr", models["llpr"], "--steps",
                           "100000", *md_files(tmp_path)], start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while lines_in(log) < 3 and md.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lines_in(log) >= 3, "md did not log two steps"
        os.killpg(md.pid, signal.SIGINT)
        _, err = md.communicate(timeout=120)
    finally:
        if md.poll() is None:
            md.kill()
    assert md.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "mdmonitor md: interrupted"


def test_md_refuses_to_mix_two_runs_and_overwrite_starts_over(start, models, tmp_path, capsys):
    command = ["md", start, "--llpr", models["llpr"], "--steps", "4", "--frame-interval", "2",
               *md_files(tmp_path)]
    assert main(command) == 0
    before = (tmp_path / "m.csv").read_text(), (tmp_path / "t.extxyz").read_text()
    capsys.readouterr()
    assert main(command) == EXIT_ERROR
    [line] = error_lines(capsys)
    assert "would be overwritten; pass --overwrite" in line
    assert ((tmp_path / "m.csv").read_text(), (tmp_path / "t.extxyz").read_text()) == before
    assert main([*command, "--overwrite"]) == 0
    with open(tmp_path / "m.csv") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [0, 1, 2, 3, 4]
    frames = ase.io.read(tmp_path / "t.extxyz", index=":")
    assert [frame.info["step"] for frame in frames] == [0, 2, 4]


def test_label_watch_stopped_by_ctrl_c_is_a_normal_end(tmp_path):
    """`mdmonitor lammps --label` stops its watcher so: no "interrupted", exit status 0."""
    (tmp_path / "queue" / "pending").mkdir(parents=True)
    watcher = subprocess.Popen([*MDMONITOR, "label", str(tmp_path / "queue"), "--reference",
                                "ase.calculators.emt:EMT", "--watch", "--poll", "0.2",
                                "--no-progress"], start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "queue" / "claims").exists() and watcher.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        os.killpg(watcher.pid, signal.SIGINT)
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, err
    assert "interrupted" not in out + err and "labeling" not in err
    assert out.strip().endswith("0 failed; 0 retried; stopped watching")


def test_demo_keeps_the_md_running_while_borders_relax_and_says_what_to_conclude(tmp_path,
                                                                                 capsys):
    """Borders relax in a background process (inline, each box froze the progress bar for
    40-100 s on a busy machine); every uncertainty printed carries the estimator's unit."""
    code = main(["demo", "--uq", "llpr", "--steps", "12", "--threshold", "0.001",
                 "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    held_up = float(out.split("MD held up ")[1].split(" s per extraction")[0])
    assert held_up < 1.0
    assert "mean local uncertainty (1/sqrt(LPR)): surface atoms" in out
    assert "local uncertainty of the centre (1/sqrt(LPR)) vs the model's real force error" in out
    assert "frames above threshold 0.001 1/sqrt(LPR): 13" in out
    assert "  -> the model is least sure at the surfaces" in out
    assert "  -> the model is off by" in out and "eV/A where the monitor cut" in out


def test_readme_python_example_runs_quietly_and_its_threshold_fires(tmp_path):
    """The README's first example, pasted as is: no FutureWarning (ASE's fixcm), no mace banner
    on stdout, and the threshold it gives is crossed on the hot slab (0.15 never was)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.py").write_text(example)
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", "example.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "" and "Warning" not in done.stderr
    with open(tmp_path / "monitor.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 201
    assert sum(int(row["n_above_threshold"]) > 0 for row in rows) >= 10
