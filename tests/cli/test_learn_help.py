"""`mdmonitor learn --help` names every selection strategy the config accepts."""

import re

import pytest

from mdmonitor.cli import main
from mdmonitor.learn.config import SELECTIONS


def test_learn_help_names_every_selection_strategy(capsys):
    with pytest.raises(SystemExit) as done:
        main(["learn", "--help"])
    assert done.value.code == 0
    text = re.sub(r"-\s+", "-", " ".join(capsys.readouterr().out.split()))  # unwrapped
    assert [strategy for strategy in SELECTIONS if strategy not in text] == []
