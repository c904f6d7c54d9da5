"""The labeling progress bar counts boxes: a retried box is still one box of the total."""

import re

from ase.calculators.emt import EMT

from mdmonitor.labeling.labeler import Labeler
from tests.labeling.test_labeler import queue_with_boxes


def test_progress_total_stays_the_number_of_boxes_when_one_is_retried(tmp_path, capsys):
    queue, names = queue_with_boxes(tmp_path, centres=(0, 50))
    calls = []

    class FailsOnce(EMT):
        def calculate(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("SCF did not converge")
            super().calculate(*args, **kwargs)

    summary = Labeler(queue, FailsOnce(), retries=1).run(progress=True)
    assert len(summary.labeled) == 2 and len(summary.retried) == 1
    shown = re.findall(r"labeling:.*?(\d+)/(\d+)", capsys.readouterr().err)
    assert shown and {total for _, total in shown} == {"2"}  # was 0/2, 1/3, 2/3, 3/3
    assert shown[-1] == ("2", "2")
