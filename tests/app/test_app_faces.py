"""The Search page on a face run (app_pages/faces.py): a two-person photo, its boxes, a row a face."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faces"))
from app_helpers import charts, go, layer_rows, start, texts, upload  # noqa: E402
from faces_helpers import SCENES, dataset, make_face_folder, make_face_run  # noqa: E402
from retrieval.index import build_index  # noqa: E402


def face_pick(at):
    """The Search page's *Face* select box (keyed by the photo's content, so found by its label)."""
    (pick,) = [box for box in at.selectbox if box.label == "Face"]
    return pick


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("appfaces")
    run = make_face_run(root, epochs=1)  # one epoch: a mining log of face crops
    gallery = make_face_folder(root / "gallery", n_classes=2, per_class=2, no_face=0)
    (gallery / "party").mkdir()
    shutil.copy(dataset(SCENES / "pairs" / "000.jpg"), gallery / "party" / "two.jpg")
    build_index(run, gallery, device="cpu", n_trees=2)
    return run


def test_a_two_person_photo_gives_two_boxed_faces_and_a_result_row_each_largest_first(monkeypatch, face_run):
    at = upload(start(monkeypatch, face_run), "two.jpg", dataset(SCENES / "pairs" / "000.jpg").read_bytes(), "image/jpeg")
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert any("2 face(s) found" in c for c in captions), captions
    assert sum(c.startswith("face ") and "aligned" in c for c in captions) == 2, "each face's aligned crop is shown"
    pick = face_pick(at)
    assert "largest" in pick.format_func(pick.value), "the default pick is the largest face"
    cards = [m for m in texts(at.markdown) if "d = " in m]
    assert len(cards) == 2 * 6, "each face shows its 6 nearest gallery faces (K is the gallery size)"
    photos = [b for b in at.button if b.key.startswith("photo-")]
    assert len(photos) == 12 and all(b.label == "photo" for b in photos), "each neighbour's photo a click away"
    other = 1 - pick.value
    pick.set_value(other).run()
    assert not at.exception
    rows = [c for c in [img.caption for element in at.get("image") for img in element.proto.imgs] if "aligned" in c]
    assert rows[0].startswith(f"face {other + 1},"), "the picked face's row comes first"


def test_the_picked_face_gets_its_margin_picture_its_class_check_and_a_place_on_the_map(monkeypatch, face_run):
    at = upload(start(monkeypatch, face_run), "two.jpg", dataset(SCENES / "pairs" / "000.jpg").read_bytes(), "image/jpeg")
    picked = face_pick(at).value
    assert f"Margin picture: two.jpg · face {picked + 1}" in texts(at.subheader)
    (margin,) = [s for s in charts(at) if "layer" in s]
    bars = layer_rows(margin, 1)
    first_row = [m for m in texts(at.markdown) if "d = " in m][:6]  # the picked face's row comes first
    # (the cards are read column by column: rank 6 shares the first column with rank 1)
    assert sorted(f"d = {r['distance']:.3f}" for r in bars) == sorted(m.split("  \n")[1].split(" ≤")[0] for m in first_row), \
        "the margin picture's bars are the picked face's neighbours"
    assert all("cos = " in m for m in first_row)
    assert any("Give the query's class" in c for c in texts(at.caption))

    label = at.selectbox(key="upload_label")
    cls = next(option for option in label.options if option not in ("(unknown)", "party"))
    label.set_value(cls).run()
    assert not at.exception
    assert "Nearest positive and nearest negative" in texts(at.subheader)
    marked = [m for m in texts(at.markdown) if "d = " in m and (":material/check:" in m or ":material/close:" in m)]
    assert len(marked) == 6, "the picked face's neighbours are marked ✓ / ✗ against the class given, the others' not"

    face_pick(at).set_value(1 - picked).run()  # the other face: the class given was the first face's
    assert at.selectbox(key="upload_label").value == "(unknown)"
    assert "Nearest positive and nearest negative" not in texts(at.subheader)
    face_pick(at).set_value(picked).run()
    at.selectbox(key="upload_label").set_value(cls).run()

    at = go(at, "Embedding map")
    assert any(f"The black cross is the last query, two.jpg · face {picked + 1}." in c for c in texts(at.caption)), \
        texts(at.caption)


def test_a_new_photo_starts_on_its_largest_face(monkeypatch, face_run):
    at = upload(start(monkeypatch, face_run), "two.jpg", dataset(SCENES / "pairs" / "000.jpg").read_bytes(), "image/jpeg")
    pick = face_pick(at)
    assert pick.value == 0
    pick.set_value(1).run()
    at = upload(at, "other.jpg", dataset(SCENES / "pairs" / "003.jpg").read_bytes(), "image/jpeg")  # its largest face is its first
    pick = face_pick(at)
    assert pick.value == 0 and "largest" in pick.format_func(pick.value), "the face picked in the last photo does not carry over"


def test_the_sidebar_says_the_run_embeds_grey_aligned_faces_with_their_mirror_image(monkeypatch, face_run):
    captions = texts(start(monkeypatch, face_run).sidebar.caption)
    assert any("faces: detected and aligned (faces from 40 px, photos over 1600 px searched at 1600, rechecked at 0.9)" in c
               and "embedded with its mirror image" in c for c in captions), captions
    assert any("images made grey" in c for c in captions), "att_faces photos are stored grey: the run says it greys its inputs"


def test_a_photo_without_a_face_says_so(monkeypatch, face_run):
    from fake_runs import png_bytes

    at = upload(start(monkeypatch, face_run), "blank.png", png_bytes((120, 120, 120), size=64))
    assert any("No face found in blank.png" in w and "faces under about 40 px are not looked for in it" in w for w in texts(at.warning))
    assert not any("Server time" in c or "A neighbour is a match" in c for c in texts(at.caption)), "nothing was searched"
    refused = upload(start(monkeypatch, face_run), "notes.png", b"not an image")
    assert texts(refused.error) and not any("Server time" in c for c in texts(refused.caption))
    at.toggle(key="search_look_harder").set_value(True).run()
    (warning,) = [w for w in texts(at.warning) if "No face found in blank.png" in w]
    assert "faces under about 20 px are not looked for in it even looking harder" in warning and "--face-min-size" not in warning
    assert not any("Server time" in c for c in texts(start(monkeypatch, face_run).caption)), "no time before an upload"


def test_look_harder_finds_and_searches_a_face_the_run_misses(monkeypatch, face_run):
    missed = dataset(SCENES / "single" / "s34" / "5.jpg")  # R-Net scores this face's proposals below 0.6
    at = upload(start(monkeypatch, face_run), "man.jpg", missed.read_bytes(), "image/jpeg")
    (warning,) = [w for w in texts(at.warning) if "No face found in man.jpg" in w]
    assert "Look harder for faces" in warning
    toggle = at.toggle(key="search_look_harder")
    assert toggle.value is False and "faces from 20 px" in toggle.help
    toggle.set_value(True).run()
    assert not at.exception
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert "man.jpg: 1 face(s) found, looking harder (a box may hold something that is not a face)" in captions and any(c.startswith("face 1, aligned") for c in captions), captions
    assert not [w for w in texts(at.warning) if "No face found" in w]
    assert len([m for m in texts(at.markdown) if "d = " in m]) == 6, "its 6 nearest gallery faces"


def test_verify_looks_harder_when_switched_on(monkeypatch, face_run):
    from retrieval.evaluate import verify_images

    missed, crop = dataset(SCENES / "single" / "s34" / "5.jpg"), sorted(dataset(SCENES.parent / "att_faces" / "test").glob("*/1.png"))[0]
    at = _verify_pair(go(start(monkeypatch, face_run), "Verify"), ("man.jpg", missed.read_bytes()), ("one.png", crop.read_bytes()))
    assert any("No face found in man.jpg" in w and "Look harder" in w for w in texts(at.warning))
    at.toggle(key="verify_look_harder").set_value(True).run()
    assert not at.exception and not [w for w in texts(at.warning) if "No face found" in w]
    expected = verify_images(face_run, missed, crop, look_harder=True)["distance"]
    assert _distance(at) == pytest.approx(expected, abs=5e-4), "the page's d is `retrieval verify --look-harder`'s"


def test_the_hardest_negatives_of_a_face_run_show_its_face_crops(monkeypatch, face_run):
    at = go(start(monkeypatch, face_run), "Hardest negatives")
    assert not any("cannot read" in c for c in texts(at.caption))
    shown = [img for element in at.get("image") for img in element.proto.imgs]
    assert shown, "the triplets' face crops are shown"
    names = [c.replace("\\", "") for c in texts(at.caption) if c.endswith(".png")]  # markdown-escaped: 1\.png
    # the triplets' crops and the gallery's confused faces ("**s1** · 2.png") by their photos' names, never the cache's
    assert names and all(c.rsplit(" ", 1)[-1] in ("1.png", "2.png", "3.png") for c in names), names


def test_picking_from_a_face_gallery_shows_faces_named_by_photo_and_face(monkeypatch, face_run):
    at = start(monkeypatch, face_run)
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    buttons = [b for b in at.button if b.key.startswith("pick-")]
    names = [c for c in texts(at.caption) if " · " in c and "\n" not in c]  # each picture's caption, above its "pick" button, in page order
    assert len(names) == len(buttons) and all(b.label == "pick" for b in buttons), names
    two = [name for name in names if "two" in name]
    assert sorted(two) == [r"party · two.jpg · face 1", r"party · two.jpg · face 2"], names
    assert any("faces; page" in c for c in texts(at.caption)), "the picker counts faces, not photos"
    buttons[names.index(two[1])].click().run()
    assert not at.exception
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert any(c.startswith("query: two.jpg · face 2") for c in captions), captions  # the class is in the caption below
    assert not any("cannot read" in c for c in texts(at.caption))
    assert len([m for m in texts(at.markdown) if "d = " in m]) >= 5, "its neighbours are shown"


def test_a_face_gallery_thumbnail_is_the_face_with_some_context_not_the_photo(face_run):
    import io

    from PIL import Image

    from app_pages.common import FACE_CONTEXT, face_thumbnail
    from retrieval.index import GalleryIndex

    index = GalleryIndex.load(face_run, load_model=False)
    item = next(i for i in range(len(index)) if index.relative_paths[i].endswith("two.jpg"))
    box = tuple(index.face(item)["box"])
    data = face_thumbnail.__wrapped__(str(index.path(item)), "stamp", box) if hasattr(face_thumbnail, "__wrapped__") \
        else face_thumbnail(str(index.path(item)), "stamp", box)
    shown = Image.open(io.BytesIO(data))
    photo = Image.open(index.path(item))
    width, height = box[2] - box[0], box[3] - box[1]
    expected = (min(photo.width, width * (1 + 2 * FACE_CONTEXT)), min(photo.height, height * (1 + 2 * FACE_CONTEXT)))
    scale = min(1.0, 256 / max(expected))  # THUMBNAIL_PX
    assert abs(shown.width - expected[0] * scale) <= 3 and abs(shown.height - expected[1] * scale) <= 3
    assert shown.width < photo.width / 2, "a face, not the whole photo"


def test_the_map_of_a_face_gallery_draws_each_face_as_its_crop(monkeypatch, face_run):
    import base64
    import io

    from PIL import Image

    at = go(start(monkeypatch, face_run), "Embedding map")
    (spec,) = charts(at)
    pictures = {row["name"]: row["picture"] for row in layer_rows(spec, 1)}
    faces = sorted(name for name in pictures if "two.jpg" in name)
    assert faces == ["party/two.jpg · face 1", "party/two.jpg · face 2"], sorted(pictures)
    one, two = (Image.open(io.BytesIO(base64.b64decode(pictures[name].split(",", 1)[1]))) for name in faces)
    assert one.tobytes() != two.tobytes(), "each face its own crop"
    from app_pages.common import face_with_context
    from retrieval.index import GalleryIndex

    index = GalleryIndex.load(face_run, load_model=False)
    items = [i for i in range(len(index)) if index.relative_paths[i].endswith("two.jpg")]
    photo = Image.open(index.path(items[0])).convert("RGB")
    for shown, item in zip((one, two), sorted(items, key=lambda i: index.face(i)["face"])):
        expected = face_with_context(photo, tuple(index.face(item)["box"]))
        expected.thumbnail((48, 48))
        assert shown.size == expected.size != (48, 36), "the face with its context, not the 480 x 360 photo"
    assert any("drawn as their face" in c for c in texts(at.caption))


def _verify_pair(at, first, second):
    for key, (name, payload) in zip(("verify_a", "verify_b"), (first, second)):
        at.file_uploader(key=key).set_value((name, payload, "image/jpeg"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _distance(at) -> float:
    (verdict,) = [m for m in texts(at.markdown) if m.startswith(("**d = ", ":green[", ":orange["))]
    return float(verdict.split("d = ")[1].split()[0].rstrip(":*"))


def test_verify_on_a_face_run_compares_faces_as_the_command_does_and_lets_you_pick_one(monkeypatch, face_run):
    from retrieval.evaluate import verify_images

    photo, crop = dataset(SCENES / "pairs" / "000.jpg"), sorted(dataset(SCENES.parent / "att_faces" / "test").glob("*/1.png"))[0]
    at = _verify_pair(go(start(monkeypatch, face_run), "Verify"), ("two.jpg", photo.read_bytes()), ("one.png", crop.read_bytes()))
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert "two.jpg: 2 face(s) found" in captions and "one.png: 1 face(s) found" in captions, captions
    assert sum(c.startswith("face 1, aligned") for c in captions) == 2, "each side shows the aligned crop it compares"
    picks = [s for s in at.selectbox if s.key.startswith("verify_face_")]
    assert len(picks) == 1 and picks[0].key.startswith("verify_face_a_"), "a photo with one face offers no choice"
    pick = picks[0]
    assert pick.value == 0 and "most confident" in pick.format_func(0), "the default is the face `retrieval verify` takes"
    expected = verify_images(face_run, photo, crop)["distance"]
    assert _distance(at) == pytest.approx(expected, abs=5e-4), "the page's d is the command's (shown to 3 decimals)"
    pick.set_value(1).run()
    assert not at.exception
    assert any(c.startswith("face 2, aligned") for element in at.get("image") for img in element.proto.imgs
               for c in [img.caption])
    assert abs(_distance(at) - expected) > 1e-3, "the other face of the photo is another person: another distance"
    other = dataset(SCENES / "pairs" / "001.jpg")  # another two-person photo: its pick starts again at the most confident
    _verify_pair(at, ("other.jpg", other.read_bytes()), ("one.png", crop.read_bytes()))
    (fresh,) = [s for s in at.selectbox if s.key.startswith("verify_face_a_")]
    assert fresh.key != pick.key and fresh.value == 0


def test_verify_on_a_face_run_says_when_an_upload_has_no_face(monkeypatch, face_run):
    from fake_runs import png_bytes

    photo = dataset(SCENES / "pairs" / "000.jpg")
    at = _verify_pair(go(start(monkeypatch, face_run), "Verify"), ("two.jpg", photo.read_bytes()),
                      ("blank.png", png_bytes((120, 120, 120), size=64)))
    assert any("No face found in blank.png: this run compares faces" in w and "faces under about 40 px are not looked for" in w
               for w in texts(at.warning)), texts(at.warning)
    assert not [m for m in texts(at.markdown) if "d = " in m], "no verdict without a face on each side"
    assert not texts(at.info), "both photos were given: no request to upload them"


def test_draw_boxes_numbers_each_box_on_a_label_that_scales_with_the_photo():
    import numpy as np
    from PIL import Image

    from app_pages.faces import BOX_COLOUR, draw_boxes

    photo = Image.new("RGB", (800, 600), (0, 0, 0))
    boxes = [(100, 100, 300, 350), (500, 120, 650, 300)]
    shown = np.asarray(draw_boxes(photo, boxes))
    assert photo.getpixel((150, 150)) == (0, 0, 0), "the photo itself is not drawn on"
    for x0, y0, x1, y1 in boxes:
        label = shown[y0:y0 + 800 // 25, x0:x0 + 12]  # the label is at least 1/25 of the longer side high
        assert not (label == 0).all(axis=-1).any(), "the label covers its corner of the box"
        assert (label == 255).all(axis=-1).any() and (label == BOX_COLOUR).all(axis=-1).any(), "a white number on the box colour"
        assert (shown[y0 + 60, x1 - 2] == BOX_COLOUR).all() and (shown[(y0 + y1) // 2, (x0 + x1) // 2] == 0).all(), "an outline, not a fill"


def test_an_upload_is_detected_on_torchs_threads_and_each_face_embedded_on_one(monkeypatch, face_run):
    """A photo's image pyramid is parallel work (a 1 MP upload: about 270 ms of detection on one
    thread, 160 ms on two), as ``retrieval search`` runs it; a face crop's embedding, a batch of one,
    keeps one thread (app_pages.common.one_torch_thread)."""
    import torch

    from app_pages import common
    from retrieval.faces.pipeline import FacePipeline
    from retrieval.index import GalleryIndex

    monkeypatch.setattr(common, "_PROCESS_THREADS", None)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = {"detect": [], "embed": []}
    detect, embed = FacePipeline.faces, GalleryIndex.embed

    def counted_detect(self, image):
        seen["detect"].append(torch.get_num_threads())
        return detect(self, image)

    def counted_embed(self, image):
        seen["embed"].append(torch.get_num_threads())
        return embed(self, image)

    monkeypatch.setattr(FacePipeline, "faces", counted_detect)
    monkeypatch.setattr(GalleryIndex, "embed", counted_embed)
    try:
        photo = dataset(SCENES / "pairs" / "001.jpg").read_bytes()  # not uploaded by another test: not cached
        upload(start(monkeypatch, face_run), "threads.jpg", photo, "image/jpeg")
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert seen["detect"] == [2], seen
    assert len(seen["embed"]) >= 2 and set(seen["embed"]) == {1}, seen  # the two faces (and the index's warm-up)
    assert after == 2, "the page leaves torch's threads as it found them"


def test_overlapping_one_thread_sections_restore_the_process_threads():
    """Two sessions' embeddings overlapping (A enters, B enters, A leaves, B leaves) leave torch on the
    process's thread count, not on the 1 that B found when it entered."""
    import torch

    from app_pages import common

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    common._PROCESS_THREADS = None
    try:
        first, second = common.one_torch_thread(), common.one_torch_thread()
        first.__enter__()
        second.__enter__()
        assert torch.get_num_threads() == 1
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        common._PROCESS_THREADS = None


def test_hardest_negatives_find_a_face_runs_crops_when_the_log_names_them_relative_or_the_run_moved(monkeypatch, face_run, tmp_path):
    """A run trained with a relative ``--out`` before its log named crops by absolute path
    ("run/faces/<settings>/<crop>.png"), or a run moved to another folder (its log naming the old
    place): the page looks each crop up by name in the run's own faces/ folder."""
    import json

    moved = tmp_path / "moved"
    shutil.copytree(face_run, moved)
    logs = sorted((moved / "mining").glob("epoch_*.jsonl"))
    assert logs
    for n, log in enumerate(logs):
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        for i, row in enumerate(rows):
            for role in ("anchor", "positive", "negative"):
                crop = Path(row[f"{role}_path"])
                assert crop.is_absolute()
                relative = Path("run") / "faces" / crop.parent.name / crop.name
                row[f"{role}_path"] = str(relative if (n + i) % 2 else Path("/gone/run/faces") / crop.parent.name / crop.name)
        log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    at = go(start(monkeypatch, moved), "Hardest negatives")
    assert not any("cannot read" in c for c in texts(at.caption)), [c for c in texts(at.caption) if "cannot read" in c][:2]
    assert [img for element in at.get("image") for img in element.proto.imgs], "the triplets' face crops are shown"


def test_a_logged_path_shaped_like_a_crop_is_only_looked_up_inside_the_runs_own_faces_folder(face_run):
    from app_pages.faces import logged_image
    from retrieval.errors import RetrievalError
    from retrieval.run import RunConfig

    config = RunConfig.read(face_run)
    crop = next((face_run / "faces").rglob("*.png"))
    named = f"elsewhere/faces/{crop.parent.name}/{crop.name}"
    assert logged_image(config, named, face_run) == face_run / "faces" / crop.parent.name / crop.name
    with pytest.raises(RetrievalError):  # without the run's folder a relative crop path is a data-folder path: not there
        logged_image(config, f"../faces/{crop.parent.name}/{crop.name}")
    with pytest.raises(RetrievalError):  # a settings folder that is not a plain name is not a crop of the run
        logged_image(config, f"faces/../{crop.name}", face_run)


def dialog_images(at) -> list:
    """The images of an open dialog (Streamlit renders it outside the main column)."""
    return [img for element in at.get("image") for img in element.proto.imgs if "face" in img.caption or ".jpg" in img.caption
            or ".png" in img.caption]


def test_a_neighbours_photo_button_opens_its_photo_large_with_the_face_boxed(monkeypatch, face_run):
    at = upload(start(monkeypatch, face_run), "two.jpg", dataset(SCENES / "pairs" / "000.jpg").read_bytes(), "image/jpeg")
    before = len(list(at.get("image")))
    button = next(b for b in at.button if b.key == "photo-1-1")
    button.click().run()
    assert not at.exception
    shown = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert len(list(at.get("image"))) == before + 1, "the dialog adds the photo"
    assert any(" · face " in c for c in shown), shown


def test_picked_from_a_face_gallery_the_neighbours_photos_are_a_click_away_too(monkeypatch, face_run):
    """A query picked from the gallery is searched as a stored embedding (no upload), and its
    neighbours' cards show their face; each has the photo button, as an upload's rows do."""
    at = start(monkeypatch, face_run)
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    first = next(b for b in at.button if b.key.startswith("pick-"))
    first.click().run()
    assert not at.exception
    photos = [b for b in at.button if b.key.startswith("photo-")]
    n_cards = len([m for m in texts(at.markdown) if "cos = " in m])  # one a neighbour
    assert n_cards and {b.key for b in photos} == {"photo-query", *(f"photo-{rank}" for rank in range(1, n_cards + 1))}
    before = len(list(at.get("image")))
    import streamlit as st

    from app_pages.faces import PHOTO_MIN_PX
    shown = st.image
    widths = []
    monkeypatch.setattr(st, "image", lambda *args, **kwargs: widths.append((kwargs.get("caption"), kwargs.get("width")))
                        or shown(*args, **kwargs))
    seen = set()
    for rank in range(1, n_cards + 1):
        next(b for b in at.button if b.key == f"photo-{rank}").click().run()
        assert not at.exception and len(list(at.get("image"))) == before + 1
        dialog = list(at.get("image"))[-1].proto.imgs[0].caption
        (width,) = {w for caption, w in widths if caption == dialog}
        # a 92 × 112 crop was shown at its own size in the large dialog; a 480 × 360 photo is shown at its own
        assert width == ("content" if "two.jpg" in dialog else PHOTO_MIN_PX), (dialog, width)
        seen.add("two.jpg" in dialog)
        widths.clear()
        if seen == {True, False}:
            break
    assert seen == {True, False}, "a photo and a small crop among the neighbours"


def test_the_photo_of_a_gallery_face_is_at_most_photo_px_with_that_face_boxed_and_numbered(tmp_path):
    """photo_with_face: a 2400 × 1800 photo comes back 1200 × 900, the box drawn at half its coordinates
    in the box colour, the rest of the photo as it was."""
    import io

    import numpy as np
    from PIL import Image

    from app_pages.common import path_key
    from app_pages.faces import BOX_COLOUR, PHOTO_PX, photo_with_face

    photo = tmp_path / "big.png"
    Image.new("RGB", (2400, 1800), (20, 120, 40)).save(photo)
    encoded = photo_with_face(path_key(photo), "stamp", (400.0, 600.0, 1000.0, 1400.0), 2)
    shown = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB")).astype(int)
    assert shown.shape == (PHOTO_PX * 3 // 4, PHOTO_PX, 3)
    red, green, _ = shown[450, 202]  # the box's left edge at x = 400 / 2, 6 px wide (JPEG smears its colour)
    assert red > 180 and green < 110 and BOX_COLOUR[0] > 200, "the box's left edge"
    assert np.abs(shown[450, 350] - (20, 120, 40)).max() < 20, "inside the box the photo as it was"
    assert np.abs(shown[100, 1000] - (20, 120, 40)).max() < 20
    assert photo_with_face(path_key(tmp_path / "gone.png"), "stamp", (0.0, 0.0, 1.0, 1.0), 1) is None
