"""The Embedding map page (app_pages/embedding_map.py): the gallery in 2-D and the last query on it."""

import fake_runs
from app_helpers import charts, full_run, gallery, go, layer_rows, start, texts, upload  # noqa: F401


def test_embedding_map_places_the_last_query(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Embedding map")
    assert any("Search on the Search page" in c for c in texts(at.caption))
    (spec,) = charts(at)
    points = layer_rows(spec, 0)
    assert len(points) == len(fake_runs.CLASSES) * fake_runs.IMAGES_PER_CLASS
    assert {p["label"] for p in points} == set(fake_runs.CLASSES)

    go(at, "Search")
    upload(at, "mapped.png", fake_runs.png_bytes((200, 200, 0)))
    go(at, "Embedding map")
    (spec,) = charts(at)
    assert len(spec["layer"]) == 2
    assert layer_rows(spec, 1)[0]["name"] == "mapped.png"
    assert any("last query, mapped.png" in c for c in texts(at.caption))
