"""The time `mdmonitor label` reports includes starting its Dask workers, and says how much."""

import re

from tests.cli.test_label_command import label
from tests.labeling.test_labeler import queue_with_boxes


def test_label_time_includes_starting_the_workers(tmp_path, capsys):
    queue, _ = queue_with_boxes(tmp_path, centres=(0,))
    assert label(queue, "Slow", "--workers", "1") == 0
    out = capsys.readouterr().out
    found = re.search(r"labeled 1 boxes into .* in ([\d.]+) s \(of which ([\d.]+) s starting 1 "
                      r"worker\)", out)
    assert found, out
    total, startup = map(float, found.groups())
    assert 0 < startup <= total  # a LocalCluster and its workers' imports take seconds
