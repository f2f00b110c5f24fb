"""Evaluation pictures: score histograms with the deployed threshold, and each OOD set's most and
least OOD-looking images, picked by their scores."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from oe_lightning import plots
from tests.conftest import train_in_process


def test_extremes_are_the_highest_then_the_lowest_scores_in_order():
    scores = torch.tensor([0.3, -1.0, 2.0, 0.3, 5.0, -3.0])
    top, bottom = plots.extremes(scores, k=2)
    assert top == [4, 2] and bottom == [5, 1]
    top, bottom = plots.extremes(scores, k=10)  # fewer images than k: all of them, each way
    assert sorted(top) == sorted(bottom) == list(range(6))


def test_a_run_draws_each_ood_sets_extreme_images_and_the_threshold(tmp_path, monkeypatch):
    drawn = {}
    real = plots.gallery_figure

    def spy(name, images, scores, threshold, path):
        drawn[name] = (images, scores, threshold)
        return real(name, images, scores, threshold, path)

    monkeypatch.setattr(plots, "gallery_figure", spy)
    results = train_in_process(tmp_path / "run", "trainer.max_epochs=1", "evaluation.plots=true")
    folder = tmp_path / "run" / "plots"
    names = set(results["ood"])
    assert {p.name for p in folder.iterdir()} == {"score_histograms.png", *(f"gallery_{n}.png" for n in names)}
    for path in folder.iterdir():
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
    threshold = results["operating_point"]["threshold"]
    import numpy as np

    saved = np.load(tmp_path / "run" / "scores.npz")
    for name in names:
        images, scores, seen_threshold = drawn[name]
        values = torch.from_numpy(saved[f"{name}/{results['detector']}"])
        assert seen_threshold == threshold and len(scores) == 16
        assert scores[:8] == pytest.approx(sorted(values.tolist(), reverse=True)[:8])
        assert scores[8:] == pytest.approx(sorted(values.tolist())[:8])
        assert images.shape[0] == 16 and float(images.min()) >= -1e-6 and float(images.max()) <= 1 + 1e-6


def test_a_plotting_failure_is_a_warning_and_never_loses_the_results(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(plots, "histogram_figure", broken)
    results = train_in_process(tmp_path / "run", "trainer.max_epochs=1", "evaluation.plots=true")
    assert (tmp_path / "run" / "results.json").is_file() and "mean" in results
    assert "evaluation plots could not be drawn (RuntimeError: no display)" in caplog.text
