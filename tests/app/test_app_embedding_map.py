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
    assert len(spec["layer"]) == 4  # points, the pictures' class-coloured frames, pictures, query
    assert layer_rows(spec, 3)[0]["name"] == "mapped.png"
    assert any("last query, mapped.png" in c for c in texts(at.caption))


def test_embedding_map_draws_points_as_their_pictures_and_the_toggle_turns_them_off(monkeypatch, full_run):
    import base64
    import io

    from PIL import Image

    at = go(start(monkeypatch, full_run), "Embedding map")
    (spec,) = charts(at)
    points, frames, pictures = layer_rows(spec, 0), layer_rows(spec, 1), layer_rows(spec, 2)
    assert spec["layer"][1]["mark"]["type"] == "square" and spec["layer"][2]["mark"]["type"] == "image"
    assert spec["layer"][1]["encoding"]["color"]["field"] == "label", "each picture framed in its class colour"
    assert [(f["name"], f["label"]) for f in frames] == [(p["name"], p["label"]) for p in pictures]
    assert len(pictures) == len(points)  # a small gallery: every point has its picture
    by_name = {p["name"]: p for p in points}
    for row in pictures:
        assert (row["x"], row["y"]) == (by_name[row["name"]]["x"], by_name[row["name"]]["y"])
        head, data = row["picture"].split(",", 1)
        assert head in ("data:image/png;base64", "data:image/jpeg;base64")
        assert max(Image.open(io.BytesIO(base64.b64decode(data))).size) <= 48
    assert any("drawn as their image" in c for c in texts(at.caption))
    at.toggle(key="map_pictures").set_value(False).run()
    (spec,) = charts(at)
    assert [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]] == ["circle"]
