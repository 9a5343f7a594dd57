"""The map's figure: every point up to the scatter limit; beyond it an even sample drawn over a
density of every image, binned on the server so the browser gets a grid, not every position."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from core import MapView

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


class _Mapped:
    """What the map widget asks of a collection, over ``n`` points with some of them labelled."""

    def __init__(self, n: int, labels: dict[str, str]) -> None:
        frame = _frame(n)
        self.view = MapView(image_id=tuple(frame["image_id"]), file_name=tuple(f"<b>{i}</b>.jpg" for i in range(n)),
                            source=("s",) * n, x=frame["x"].to_numpy(np.float32), y=frame["y"].to_numpy(np.float32),
                            anomaly_score=frame["score"].to_numpy(np.float32),
                            anomaly_percentile=np.linspace(0, 100, n, dtype=np.float32), label=(None,) * n,
                            cluster_id=np.zeros(n, dtype=np.int32), fitted=n)
        self._labels = labels

    def projection(self) -> MapView:
        return self.view

    def version(self) -> int:
        return len(self.view)  # the widget caches points per version: one per size here

    def labels(self) -> dict[str, str]:
        return self._labels

    def decisions(self) -> dict:
        return {}


def test_beyond_the_limit_a_sample_lies_over_a_density_of_every_image(map_widget: ModuleType) -> None:
    labels = {f"id{i}": "anomaly" for i in range(0, 3000, 7)}
    drawn, everything = map_widget.map_points(_Mapped(3000, labels), highlight={"id0", "id1"})
    assert len(drawn) == 400 and len(everything) == 3000 and set(drawn["image_id"]) <= set(everything["image_id"])
    assert all((drawn["label"] == "anomaly") == drawn["image_id"].isin(labels.keys()))
    assert set(drawn["selection"]) <= {"selected", "other"} and drawn["name"].str.startswith("&lt;b&gt;").all()
    figure = map_widget.map_figure(drawn, "source", everything)
    density, *points = figure.data
    assert density.type == "contour" and {t.type for t in points} == {"scattergl"}
    assert sorted(i for t in points for i in t.customdata[:, 0]) == sorted(drawn["image_id"])
    assert np.asarray(density.z).sum() == 3000  # every image counted, once
    assert np.asarray(density.z).size == map_widget.DENSITY_BINS**2  # a grid, whatever the collection's size


def test_up_to_the_limit_every_image_is_joined_and_drawn(map_widget: ModuleType) -> None:
    drawn, everything = map_widget.map_points(_Mapped(300, {"id5": "normal"}))
    assert len(drawn) == len(everything) == 300 and "selection" not in drawn
    assert drawn.set_index("image_id")["label"].to_dict() == {f"id{i}": "normal" if i == 5 else "none" for i in range(300)}
    assert [t.type for t in map_widget.map_figure(drawn, "label", everything).data] == ["scattergl"] * 2
