"""The map's figure: every point up to the scatter limit; beyond it an even sample drawn over a
density of every image, binned on the server so the browser gets a grid, not every position."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

MAP = Path(__file__).resolve().parents[1] / "app" / "widgets" / "map.py"


@pytest.fixture
def map_widget(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("map_widget", MAP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SCATTER_LIMIT", 400)
    return module


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"image_id": [f"id{i}" for i in range(n)], "name": [f"{i}.jpg" for i in range(n)],
                         "x": rng.normal(size=n), "y": rng.normal(size=n), "source": "s", "score": rng.random(n),
                         "cluster": "none", "label": "none", "decision": "none"})


def test_up_to_the_limit_every_point_is_drawn_and_no_density(map_widget: ModuleType) -> None:
    figure = map_widget.map_figure(_frame(400), "score")
    assert [t.type for t in figure.data] == ["scattergl"]
    assert sorted(figure.data[0].customdata[:, 0]) == sorted(f"id{i}" for i in range(400))


def test_beyond_the_limit_a_sample_lies_over_a_density_of_every_image(map_widget: ModuleType) -> None:
    frame = _frame(3000)
    figure = map_widget.map_figure(frame, "source")
    density, *points = figure.data
    assert density.type == "contour" and {t.type for t in points} == {"scattergl"}
    drawn = [i for t in points for i in t.customdata[:, 0]]
    assert len(drawn) == 400 and set(drawn) <= set(frame["image_id"])
    assert np.asarray(density.z).sum() == 3000  # every image counted, once
    assert np.asarray(density.z).size == map_widget.DENSITY_BINS**2  # a grid, whatever the collection's size
