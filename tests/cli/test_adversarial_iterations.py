"""`mdmonitor adversarial -n 0` would queue the start structure unchanged: it is a usage error."""

import pytest

from mdmonitor.cli import main


@pytest.mark.parametrize("option", ["-n", "--iterations"])
def test_zero_iterations_is_a_usage_error_before_anything_is_queued(option, tmp_path, capsys):
    queue = tmp_path / "queue"
    with pytest.raises(SystemExit) as done:
        main(["adversarial", str(tmp_path / "start.extxyz"), "--llpr", "llpr.npz", option, "0",
              "--queue", str(queue)])
    assert done.value.code == 2
    assert "argument -n/--iterations: value must be a positive integer, got 0" in capsys.readouterr().err
    assert not queue.exists()
