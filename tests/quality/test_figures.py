"""The evaluation figures read at a glance: tick labels apart, a colour bar for every hexbin."""

import itertools

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from mdmonitor.quality.evaluation import _plot_error_vs_uncertainty, evaluate
from tests.labeled_frames import cu_frames, emt_labeled


@pytest.fixture(scope="module")
def error_vs_uncertainty(committee, tmp_path_factory):
    evaluation = evaluate(committee, emt_labeled(cu_frames()), cutoff=4.0, progress=False)
    path = tmp_path_factory.mktemp("figures") / "error_vs_uncertainty.png"
    levels = [evaluation.level(0.0), evaluation.level(4.0)]
    return _plot_error_vs_uncertainty(levels, evaluation.unit, path), levels


def test_every_hexbin_panel_has_a_colour_bar(error_vs_uncertainty):
    figure, levels = error_vs_uncertainty
    panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == len(levels)
    for ax in panels:
        colour_bar = ax.collections[0].colorbar
        assert colour_bar is not None and colour_bar.ax.get_ylabel() == "atoms per hexagon"


def test_tick_labels_do_not_overlap_and_name_plain_numbers(error_vs_uncertainty):
    figure, levels = error_vs_uncertainty
    # the 4 A panel spans less than a decade in uncertainty: where the labels used to collide
    assert levels[1].uncertainty.max() / levels[1].uncertainty.min() < 10
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            labels = [tick.label1 for tick in axis.get_major_ticks() + axis.get_minor_ticks()
                      if tick.label1.get_visible() and tick.label1.get_text()
                      and low <= tick.get_loc() <= high]
            if ax.get_label() != "<colorbar>":
                assert labels, f"no tick label on {axis.axis_name} axis of '{ax.get_title()}'"
            boxes = [label.get_window_extent(renderer) for label in labels]
            for a, b in itertools.combinations(boxes, 2):
                assert not a.overlaps(b), [label.get_text() for label in labels]
