"""`evaluate` reports the component-wise prediction rigidity of an LLPR's readouts."""

import numpy as np
import pytest

from mdmonitor.quality.evaluation import evaluate
from mdmonitor.quality.metrics import spearman
from tests.labeled_frames import cu_frames, emt_labeled


@pytest.fixture(scope="module")
def evaluation(llpr):
    return evaluate(llpr, emt_labeled(cu_frames()), cutoff=4.0, progress=False)


def test_one_line_per_readout_with_the_median_cpr_of_structures_and_atoms(llpr, evaluation):
    frames = [p.atoms for p in evaluation.predictions]
    assert [c.component for c in evaluation.components] == [0, 1]
    for c, component in enumerate(evaluation.components):
        assert component.structure_rigidity == pytest.approx(
            np.median([llpr.component_rigidity(a)[c] for a in frames]))
        atomic = np.concatenate([llpr.atomic_component_rigidity(a)[:, c] for a in frames])
        assert component.atomic_rigidity == pytest.approx(np.median(atomic))
        errors = np.concatenate([p.atomic_error for p in evaluation.predictions])
        assert component.spearman_atom == pytest.approx(spearman(1 / np.sqrt(atomic), errors))


def test_the_report_has_a_cpr_table_and_a_committee_none(evaluation, committee, tmp_path):
    evaluation.write(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## Component-wise prediction rigidity (CPR) of the readouts" in text
    assert text.count("\n| 0 | ") == 1 and text.count("\n| 1 | ") == 1
    assert len(evaluation.summary()["component_rigidity"]) == 2
    assert evaluate(committee, emt_labeled(cu_frames()), progress=False).components == []
