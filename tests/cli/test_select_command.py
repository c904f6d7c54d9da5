"""`mdmonitor select`: PR-guided choice among a queue's pending boxes, from the shell."""

import pytest

from mdmonitor import LastLayerLPR
from mdmonitor.cli import main
from tests.embedded_boxes import embedded_pool


@pytest.fixture
def queue(models, tmp_path):
    return embedded_pool(tmp_path / "queue", LastLayerLPR.load(models["llpr"]))


def test_select_keeps_n_boxes_and_reports_the_targets_lpr(models, queue, capsys):
    cut = len(queue.boxes("pending"))
    assert main(["select", str(queue.root), "--llpr", models["llpr"], "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 target environment(s)" in out and "kept 2 box(es) pending (--n 2)" in out
    assert f"moved {cut - 2} to" in out
    assert len(queue.boxes("pending")) == 2 and len(queue.boxes("skipped")) == cut - 2


def test_an_llpr_file_for_another_model_is_refused(models, queue, capsys):
    code = main(["select", str(queue.root), "--llpr", models["llpr"], "--model",
                 models["committee"][1], "--n", "2"])
    assert code == 1
    assert "fitted for another model" in capsys.readouterr().err
    assert queue.boxes("skipped") == []


def test_an_empty_queue_and_a_bad_n_are_clear_errors(models, tmp_path, capsys):
    (tmp_path / "queue" / "pending").mkdir(parents=True)
    assert main(["select", str(tmp_path / "queue"), "--llpr", models["llpr"], "--n", "1"]) == 1
    assert "no pending boxes to select from" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["select", str(tmp_path / "queue"), "--llpr", models["llpr"], "--n", "0"])
    assert usage.value.code == 2
    assert main(["select", str(tmp_path / "nowhere"), "--llpr", models["llpr"], "--n", "1"]) == 1
    assert "is not a queue directory" in capsys.readouterr().err
