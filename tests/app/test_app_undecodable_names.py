"""Gallery file names that are not valid UTF-8 (Linux names are bytes): Python reads ``b"apple_\\xff0.png"``
as ``"apple_\\udcff0.png"`` (a lone surrogate). Streamlit's cache hashed such a path as UTF-8 and raised
``UnicodeEncodeError`` on every page that showed the picture; the pages now hand the cache the path's
bytes and show the name with the byte escaped (``apple_\\xff0.png``), as the command line reads these
folders too."""

import json
import os
import re

import pytest

import fake_runs
from app_helpers import charts, go, layer_rows, neighbour_cards, start, texts, upload
from retrieval.safe_text import markdown_text, printable


def test_printable_writes_a_name_byte_that_is_not_utf8_as_its_escape():
    assert printable("apple_\udcff0.png") == "apple_\\xff0.png"
    assert printable("snow\u2603 \udcc3.png") == "snow\u2603 \\xc3.png"
    assert printable("odd\ud800.png") == "odd\\ud800.png"  # a surrogate no byte stands for (surrogatepass)
    assert printable("apple_0.png") == "apple_0.png"
    assert markdown_text("apple_\udcff0.png").encode("utf-8")  # text Streamlit can send


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """An indexed run over a gallery whose every file is named ``<class>_\\xff<i>.png`` (bytes not UTF-8),
    with a mining log naming them."""
    gallery = fake_runs.make_gallery(tmp_path_factory.mktemp("gallery"))
    for path in sorted(gallery.glob("*/*.png")):
        stem, number = path.stem.rsplit("_", 1)
        os.rename(path, os.fsdecode(os.fsencode(path.parent) + b"/" + stem.encode() + b"_\xff" + number.encode() + b".png"))
    run = fake_runs.make_run(tmp_path_factory.mktemp("runs") / "odd", gallery)
    for log in (run / "mining").glob("epoch_*.jsonl"):  # the log as training writes it: json escapes the surrogate
        log.write_text(re.sub(r"_(\d)\.png", r"_\\udcff\1.png", log.read_text()))
        assert "\udcff" in json.loads(log.read_text().splitlines()[0])["anchor_path"]
    return run


def shown_names(at) -> list[str]:
    return texts(at.caption) + texts(at.markdown) + [b.label for b in at.button]


def assert_every_picture_read(at) -> None:
    assert not any("cannot read" in c for c in texts(at.caption)), texts(at.caption)


def test_an_upload_whose_neighbours_have_such_names_shows_them_and_their_pictures(monkeypatch, odd_run):
    at = upload(start(monkeypatch, odd_run), "q.png", fake_runs.png_bytes((0, 255, 40)))
    assert len(neighbour_cards(at)) == 10
    assert_every_picture_read(at)
    assert any(markdown_text("_\\xff") in c for c in texts(at.caption))  # each card's file name, the byte escaped
    (margin_spec,) = [c for c in charts(at) if "layer" in c]
    assert all("\\xff" in row["name"] for row in layer_rows(margin_spec, 1))


def test_picking_such_a_gallery_image_searches_with_it(monkeypatch, odd_run):
    at = start(monkeypatch, odd_run)
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    at.selectbox(key="pick_class").set_value("banana").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = markdown_text("banana_\\xff0.png")
    buttons = [b for b in at.button if b.key.startswith("pick-")]
    names = [c for c in texts(at.caption) if " · " in c and "\n" not in c]  # each picture's caption, above its button
    assert len(names) == len(buttons), names
    buttons[names.index(markdown_text("banana · banana_\\xff0.png"))].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "query: " + shown in [caption for image in at.image for caption in image.captions]
    assert len(neighbour_cards(at)) == 10
    assert_every_picture_read(at)


def test_the_hardest_negatives_and_the_map_show_such_names_and_pictures(monkeypatch, odd_run):
    at = go(start(monkeypatch, odd_run), "Hardest negatives")
    assert "What the trained model confuses in the gallery" in texts(at.subheader)
    assert [m for m in texts(at.markdown) if "rank-1 confusions" in m]
    assert_every_picture_read(at)
    assert any(markdown_text("apple_\\xff0.png") in c for c in texts(at.caption))  # a logged triplet's anchor

    go(at, "Embedding map")
    (spec,) = charts(at)
    pictures = layer_rows(spec, 2)
    assert len(pictures) == len(fake_runs.CLASSES) * fake_runs.IMAGES_PER_CLASS
    assert all(row["picture"].startswith("data:image/") and "_\\xff" in row["name"] for row in pictures)
