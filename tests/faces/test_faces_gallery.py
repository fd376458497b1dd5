"""A face run's gallery: every face of every photo an item (box and photo digest in gallery.json); search every query face."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from cli_runner import cli  # noqa: F401  (fixture)
from faces_helpers import SCENES, dataset, make_face_folder, make_face_run, pairs_rows
from retrieval.index import GalleryIndex, build_index, read_index_metadata

TWO_PEOPLE = "pairs/000.jpg"


@pytest.fixture(scope="module")
def face_index(tmp_path_factory):
    """A face run with an index of: two crops of one person, a two-person photo, and a photo without a face."""
    root = tmp_path_factory.mktemp("facegallery")
    run = make_face_run(root)
    gallery = make_face_folder(root / "gallery", n_classes=1, per_class=2, no_face=1)
    (gallery / "party").mkdir()
    shutil.copy(dataset(SCENES / TWO_PEOPLE), gallery / "party" / "two_people.jpg")
    build_index(run, gallery, device="cpu", n_trees=2)
    return run, gallery


def test_every_face_of_every_photo_is_an_item_with_its_box_and_photo_digest(face_index):
    run, gallery = face_index
    metadata = read_index_metadata(run)
    items = metadata["items"]
    assert items["path"].count("party/two_people.jpg") == 2, "both faces of the two-person photo are items"
    assert not any("blank" in p for p in items["path"]), "a photo without a face is no item"
    assert metadata["n_items"] == 4 and len(items["face"]) == 4
    two = [f for p, f in zip(items["path"], items["face"]) if p == "party/two_people.jpg"]
    assert sorted(f["face"] for f in two) == [0, 1] and two[0]["sha256"] == two[1]["sha256"]
    row = pairs_rows()[0]
    rects = [[float(v) for v in row[key].split()] for key in ("left_box", "right_box")]
    centres = [((f["box"][0] + f["box"][2]) / 2, (f["box"][1] + f["box"][3]) / 2) for f in two]
    for rect in rects:  # each person of pairs.csv has a face item whose box centre lies in their rectangle
        assert any(rect[0] <= x <= rect[2] and rect[1] <= y <= rect[3] for x, y in centres)


def test_search_json_gives_every_face_of_the_query_with_neighbours_and_verdict(face_index, cli):
    run, gallery = face_index
    result = cli("search", run, gallery / "party" / "two_people.jpg", "-k", "2", "--json")
    assert result.code == 0, result.err
    faces = json.loads(result.out)["faces"]
    assert len(faces) == 2
    for face in faces:
        assert len(face["box"]) == 4 and 0 < face["score"] <= 1 and set(face["verdict"]) >= {"match", "label", "distance"}
        assert len(face["neighbours"]) == 2 and all(len(n["box"]) == 4 for n in face["neighbours"])
        assert face["neighbours"][0]["distance"] < 1e-3, "each face finds itself first"
        assert face["neighbours"][0]["path"].endswith("two_people.jpg")
    assert sorted(face["neighbours"][0]["face"] for face in faces) == [0, 1], "each finds its own face of the photo, by rank"
    for face in faces:  # a match names the photo and which face of it (an unlabelled gallery has no label to name)
        verdict = face["verdict"]
        assert (verdict["path"], verdict["face"]) == ((face["neighbours"][0]["path"], face["neighbours"][0]["face"])
                                                      if verdict["match"] else (None, None))


def test_a_query_without_a_face_gives_an_empty_list_and_one_table_line(face_index, cli):
    run, gallery = face_index
    blank = next(gallery.rglob("blank0.png"))
    result = cli("search", run, blank, "--json")
    assert result.code == 0 and json.loads(result.out) == {"faces": []}
    table = cli("search", run, blank)
    assert table.code == 0 and table.out.strip().splitlines() == [
        f"no face found in {blank}: nothing to search; faces under about 40 px are not looked for in it (the run's --face-min-size), "
        "and a face that O-Net doubts once framed by its own landmarks is dropped (--face-recheck 0.9); "
        "--look-harder looks for faces from 20 px at lower thresholds"]


def test_look_harder_searches_a_face_the_run_misses_and_says_nothing_of_itself_when_it_finds_none(face_index, cli):
    run, gallery = face_index
    missed = dataset(SCENES / "single" / "s34" / "5.jpg")  # R-Net scores this face's proposals below 0.6
    assert json.loads(cli("search", run, missed, "--json").out) == {"faces": []}
    result = cli("search", run, missed, "--json", "-k", "2", "--look-harder")
    assert result.code == 0, result.err
    (face,) = json.loads(result.out)["faces"]
    assert (face["box"][0] + face["box"][2]) / 2 < 240 and len(face["neighbours"]) == 2
    blank = next(gallery.rglob("blank0.png"))
    table = cli("search", run, blank, "--look-harder")
    assert table.code == 0 and table.out.strip().startswith(f"no face found in {blank}") and "--look-harder" not in table.out
    assert "faces under about 20 px are not looked for in it even looking harder" in table.out and "--face-min-size" not in table.out


def test_verify_looks_harder_when_asked_and_says_it_can_when_a_photo_has_no_face(face_index, cli):
    run, gallery = face_index
    missed, crop = dataset(SCENES / "single" / "s34" / "5.jpg"), next(gallery.rglob("1.png"))
    plain = cli("verify", run, missed, crop, "--json")
    assert plain.code == 2 and "no face found" in plain.err and "--look-harder looks for faces from 20 px" in plain.err
    assert len(plain.err.strip().splitlines()) == 1
    harder = cli("verify", run, missed, crop, "--json", "--look-harder")
    assert harder.code == 0, harder.err
    assert json.loads(harder.out)["faces"][0]["n_faces"] == 1


def test_a_face_index_loads_and_names_each_items_face(face_index):
    run, _ = face_index
    gallery = GalleryIndex.load(run, load_model=False)
    assert gallery.has_faces and all(gallery.face(i)["box"] for i in range(len(gallery)))


def test_removing_a_label_or_a_gone_photo_rebuilds_without_them_and_forgets_their_faces(tmp_path, cli):
    from retrieval.faces.run_faces import crop_file, run_pipeline
    from retrieval.run import read_config

    run = make_face_run(tmp_path)
    gallery = make_face_folder(tmp_path / "gallery", n_classes=3, per_class=2, no_face=0)
    (gallery / "party").mkdir()
    shutil.copy(dataset(SCENES / TWO_PEOPLE), gallery / "party" / "two_people.jpg")
    build_index(run, gallery, device="cpu", n_trees=2)
    before = GalleryIndex.load(run, load_model=False)
    pipeline = run_pipeline(run, read_config(run))
    records = {p: before.face(i) for i, p in enumerate(before.relative_paths)}
    embeddings = {p: before.embeddings[i].copy() for i, p in enumerate(before.relative_paths)}
    before.close()
    s1 = "s1"  # the first att_faces person, whose folder make_face_folder copies first
    assert crop_file(pipeline, records[f"{s1}/1.png"]) is not None

    result = cli("index", run, "--remove-label", s1, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["removed"] == 2 and json.loads(result.out)["faces_forgotten"] > 0
    assert crop_file(pipeline, records[f"{s1}/1.png"]) is None, "the removed person's cached crops are deleted"
    photo = gallery / "party" / "two_people.jpg"
    photo.unlink()  # removal works after the photo itself is gone
    assert cli("index", run, "--remove", photo).code == 0
    after = GalleryIndex.load(run, load_model=False)
    assert all(p.split("/")[0] != s1 and "two_people" not in p for p in after.relative_paths) and len(after) == 4
    for i, p in enumerate(after.relative_paths):  # rebuilt from the stored rows, nothing re-embedded
        assert (after.embeddings[i] == embeddings[p]).all()
    assert crop_file(pipeline, records["party/two_people.jpg"]) is None
    assert after.search(after.embeddings[0].copy(), 1, exact=True)[0].item == 0
    after.close()
    assert cli("index", run, "--remove-label", "nobody").lines[-1].endswith("nothing removed")


def test_index_cli_counts_faces_and_the_photos_they_come_from(face_index, cli, tmp_path):
    run, gallery = face_index
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    summary = cli("index", copy, gallery, "--n-trees", "2", "--json", "--quiet")
    assert summary.code == 0, summary.err
    counts = json.loads(summary.out)
    assert (counts["n_items"], counts["n_photos"]) == (4, 3)  # two crops, two faces of one photo
    assert counts["n_without_face"] == 1, "the grey photo: searched, no face found"
    group = [line for line in summary.lines if "more than one face" in line]
    assert len(group) == 1 and "1 photo(s) in class folders" in group[0] and "party/two_people.jpg" in group[0], summary.err
    table = cli("index", copy, gallery, "--n-trees", "2", "--quiet")
    assert table.code == 0, table.err
    assert table.out.splitlines()[0].startswith("indexed 4 face(s) from 3 photo(s) (1 photo(s) without a face not in it) in "), table.out


def test_gallery_json_lists_the_photos_without_a_face_and_adding_or_removing_keeps_the_list_right(face_index, cli, tmp_path):
    run, gallery = face_index
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    person = next(p.name for p in gallery.iterdir() if (p / "blank0.png").exists())
    blank = hashlib.sha256((gallery / person / "blank0.png").read_bytes()).hexdigest()
    assert read_index_metadata(copy)["without_face"] == [{"root": 0, "path": f"{person}/blank0.png", "label": person, "sha256": blank}]

    extra = make_face_folder(tmp_path / "extra", n_classes=1, per_class=1, no_face=2)
    added = cli("index", copy, "--add", extra, "--quiet", "--json")
    assert added.code == 0, added.err
    assert json.loads(added.out)["n_without_face"] == 3 and json.loads(added.out)["added"] is True
    again = cli("index", copy, "--add", gallery, "--quiet")  # looked at again, still no face: listed once
    assert again.code == 0 and len(read_index_metadata(copy)["without_face"]) == 3

    gone = cli("index", copy, "--remove", next(extra.rglob("blank1.png")))  # only a photo without a face
    assert gone.code == 0, gone.err
    assert gone.out.strip().endswith("1 photo(s) without a face no longer listed)"), gone.out
    listed = [entry["path"] for entry in read_index_metadata(copy)["without_face"]]
    assert len(listed) == 2 and not any(p.endswith("blank1.png") for p in listed)
    removed = json.loads(cli("index", copy, "--remove-label", person, "--json").out)  # the added folder's person too
    assert removed["without_face_forgotten"] == 2 and removed["removed"] == 3, removed
    assert read_index_metadata(copy)["without_face"] == [], "no path of the person is left in gallery.json"
    faceless = {hashlib.sha256(p.read_bytes()).hexdigest() for p in [*gallery.rglob("blank*.png"), *extra.rglob("blank*.png")]}
    cached = {p.name.split(".", 1)[0] for p in (copy / "faces").rglob("*.json")}
    assert faceless and not faceless & cached, "the removed photos' cached detections (no face) went with them"


def test_adding_the_same_folder_again_adds_nothing_though_one_photo_has_no_face(face_index, cli, tmp_path):
    run, gallery = face_index  # its gallery has a photo without a face, which is never an item
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = read_index_metadata(copy)
    again = cli("index", copy, "--add", gallery, "--quiet")
    assert again.code == 0, again.err
    assert not any(line.startswith("error") for line in again.lines), again.err
    assert not [line for line in again.lines if line.startswith("warning")], again.err  # its faceless photo was named at the build
    assert again.out.startswith("nothing added: ") and "holds 4 face(s) from 3 photo(s), as before" in again.out, again.out
    assert read_index_metadata(copy) == before, "the index stays as it was"
    assert json.loads(cli("index", copy, "--add", gallery, "--quiet", "--json").out)["added"] is False
    faceless = tmp_path / "faceless"
    (faceless / "x").mkdir(parents=True)
    shutil.copy(next(gallery.rglob("blank0.png")), faceless / "x" / "grey.png")
    none = cli("index", copy, "--add", faceless, "--quiet")
    assert none.code == 0, none.err
    assert len([line for line in none.lines if line.startswith("warning")]) == 1, none.err  # the photo named once
    assert none.out.startswith("nothing added: "), none.out


def test_indexing_a_face_gallery_reports_finding_faces_before_embedding_them(face_index, tmp_path):
    run, gallery = face_index
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    reports: list[tuple[str, int, int]] = []
    build_index(copy, gallery, device="cpu", n_trees=2, on_progress=lambda stage, done, total: reports.append((stage, done, total)))
    stages = [stage for stage, _, _ in reports]
    assert "detect" in stages and stages.index("embed") > max(i for i, s in enumerate(stages) if s == "detect")
    assert [r for r in reports if r[0] == "detect"][-1] == ("detect", 4, 4), "the four photos searched (one has no face)"


def test_search_table_output_gives_a_table_and_a_verdict_line_a_face(face_index, cli):
    run, gallery = face_index
    result = cli("search", run, gallery / "party" / "two_people.jpg", "-k", "2")
    assert result.code == 0, result.err
    photo = gallery / "party" / "two_people.jpg"
    headings = [line for line in result.out.splitlines() if line.startswith("face ")]
    assert [h.split(" (box ")[0] for h in headings] == [f"face 1 of 2 in {photo}", f"face 2 of 2 in {photo}"], \
        "each face's heading is one line, however long the path"
    assert all(h.endswith(")") and ", score " in h for h in headings)
    # the neighbours' table as for whole images: paths relative to the gallery, which face, similarity
    header = next(line for line in result.out.splitlines() if "distance" in line)
    assert all(column in header for column in ("path", "face", "label", "similarity", "match")), header
    rows = [line for line in result.out.splitlines() if line.startswith("│")]
    assert rows and not any(str(gallery)[:12] in row for row in rows), "paths relative to the gallery folder"
    assert "paths relative to" in result.out


@pytest.mark.parametrize("command", ["search", "verify"])
def test_a_face_query_above_the_query_pixel_limit_is_refused_from_its_header(face_index, cli, tmp_path, command):
    # a face run decodes queries with the queries' limit (40 MP), not the training files' (100 MP)
    from PIL import Image

    from retrieval.data.images import MAX_IMAGE_PIXELS, MAX_QUERY_PIXELS

    run, gallery = face_index
    big = tmp_path / "big.png"
    Image.new("1", (8000, MAX_QUERY_PIXELS // 8000 + 1)).save(big)  # 1 bit a pixel: a small file
    assert MAX_QUERY_PIXELS < 8000 * (MAX_QUERY_PIXELS // 8000 + 1) < MAX_IMAGE_PIXELS
    extra = [gallery / "party" / "two_people.jpg"] if command == "verify" else []
    result = cli(command, run, big, *extra)
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "too large" in lines[0] and "queries" in lines[0] and "Traceback" not in result.err, result.err


def test_gallery_photos_without_a_face_are_named_in_one_warning_with_what_the_run_looks_for(tmp_path, caplog):
    import logging

    from faces_helpers import CountingDetector
    from retrieval.faces import FacePipeline
    from retrieval.faces.run_faces import gallery_faces

    folder = make_face_folder(tmp_path / "g", n_classes=1, per_class=1, no_face=2)
    paths = sorted(folder.rglob("*.png"))
    pipeline = FacePipeline(output_size=40, cache_dir=tmp_path / "faces", detector=CountingDetector())
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        owners, crops, records, without_face, *_ = gallery_faces(pipeline, paths, list(range(len(paths))))
    assert len(records) == 1 and owners == [paths.index(next(p for p in paths if "blank" not in p.name))]
    assert sorted(p.name for p in without_face) == ["blank0.png", "blank1.png"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of 3 gallery image(s) have no face found and are not indexed" in warnings[0]
    assert "blank0.png" in warnings[0] and warnings[0].endswith("(the run looks for faces from 40 px, photos over 1600 px searched at 1600, rechecked at 0.9)")


def test_rebuilding_a_face_index_on_another_gallery_forgets_the_replaced_photos_faces_but_not_trainings(tmp_path, cli):
    """A full build that replaces a face index deletes the cached faces of the photos it no longer holds
    (else they would stay in RUN_DIR/faces/ where no --remove reaches them), keeps those of the photos it
    holds again and of the photos training read; removing every item says how to get rid of them."""
    from retrieval.faces.run_faces import crop_file, run_pipeline, training_photo_names
    from retrieval.run import read_config

    run = make_face_run(tmp_path, n_classes=2, per_class=2)
    old = make_face_folder(tmp_path / "old", n_classes=2, per_class=2, no_face=0)  # training's content
    (old / "party").mkdir()
    shutil.copy(dataset(SCENES / TWO_PEOPLE), old / "party" / "two_people.jpg")
    (old / "s31").mkdir()
    shutil.copy(dataset(SCENES / "single" / "s31" / "1.jpg"), old / "s31" / "scene.jpg")
    shutil.copy(dataset(SCENES / "single" / "s32" / "1.jpg"), old / "s31" / "kept.jpg")
    assert cli("index", run, old, "--n-trees", "2").code == 0
    before = GalleryIndex.load(run, load_model=False)
    records = {p: before.face(i) for i, p in enumerate(before.relative_paths)}
    before.close()
    pipeline = run_pipeline(run, read_config(run))
    assert all(crop_file(pipeline, r) is not None for r in records.values())

    new = tmp_path / "new"
    (new / "s32").mkdir(parents=True)
    shutil.copy(dataset(SCENES / "single" / "s32" / "1.jpg"), new / "s32" / "same_content.jpg")
    shown = cli("index", run, new, "--n-trees", "2", "--json")
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["faces_forgotten"] > 0
    assert crop_file(pipeline, records["party/two_people.jpg"]) is None
    assert crop_file(pipeline, records["s31/scene.jpg"]) is None
    assert crop_file(pipeline, records["s31/kept.jpg"]) is not None, "the new index holds the same content"
    trained = {name.split(".", 1)[0] for name in training_photo_names(run)}
    assert any(r["sha256"] in trained for r in records.values())
    assert all(crop_file(pipeline, r) is not None for r in records.values() if r["sha256"] in trained), "training's crops stay"
    refused = cli("index", run, "--remove-label", "s32")
    assert refused.code == 2 and len(refused.lines) == 1 and "which also deletes these photos' cached faces" in refused.lines[0]


def test_a_face_gallery_photo_that_cannot_be_read_counts_as_skipped(face_index, cli, tmp_path):
    """As on a run of whole images: a truncated JPEG is one of the index's unreadable images (n_skipped,
    gallery.json's skipped), not silently dropped."""
    from PIL import Image

    run, gallery = face_index
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    folder = tmp_path / "odd"
    shutil.copytree(gallery, folder)
    photo = Image.open(next(folder.rglob("1.png"))).convert("RGB")
    photo.save(tmp_path / "whole.jpg", quality=90)
    (folder / "s1" / "broken.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[: (tmp_path / "whole.jpg").stat().st_size // 2])
    shown = cli("index", copy, folder, "--n-trees", "2", "--json", "--quiet")
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["n_skipped"] == 1
    assert any(p.endswith("broken.jpg") for p in read_index_metadata(copy)["skipped"])


def test_confusions_of_a_face_index_name_each_face_of_a_photo_and_a_partly_labelled_one_says_so(face_index, cli, tmp_path):
    run, gallery = face_index
    shown = cli("confusions", run, "--json")
    assert shown.code == 0, shown.err
    text = json.dumps(json.loads(shown.out))
    assert "two_people.jpg \\u00b7 face 1" in text or "two_people.jpg · face 1" in text, text[:400]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next(gallery.rglob("1.png")), flat / "loose.png")
    assert cli("index", copy, "--add", flat, "--quiet").code == 0
    refused = cli("confusions", copy)
    assert refused.code == 2 and "1 of its 5 items without a label" in refused.lines[-1], refused.err


def test_a_face_index_build_stopped_half_way_forgets_the_faces_it_cached_and_keeps_the_current_indexs(face_index, tmp_path,
                                                                                                       monkeypatch):
    """Ctrl-C after the faces of a new gallery were found: they are in no index, so no --remove would
    ever reach them; the stopped build deletes them. The current index, and its crops, stay."""
    import retrieval.embed
    from retrieval.faces.run_faces import crop_file, run_pipeline
    from retrieval.run import read_config

    run, _ = face_index
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {p.name for p in (copy / "faces").rglob("*") if p.is_file()}
    other = tmp_path / "other"
    for person in ("s35", "s36"):
        (other / person).mkdir(parents=True)
        shutil.copy(dataset(SCENES / "single" / person / "1.jpg"), other / person / "scene.jpg")
    new = {hashlib.sha256(p.read_bytes()).hexdigest() for p in other.rglob("*.jpg")}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(retrieval.embed, "embedding_batches", interrupted)  # the faces are found and cached by then
    for command in (lambda: build_index(copy, other, device="cpu", n_trees=2),
                    lambda: __import__("retrieval.index", fromlist=["add_to_index"]).add_to_index(copy, other, device="cpu")):
        with pytest.raises(KeyboardInterrupt):
            command()
        after = {p.name for p in (copy / "faces").rglob("*") if p.is_file()}
        assert after == before, sorted(after ^ before)
        assert not {name.split(".", 1)[0] for name in after} & new
    index = GalleryIndex.load(copy, load_model=False)
    pipeline = run_pipeline(copy, read_config(copy))
    assert len(index) > 0 and all(crop_file(pipeline, index.face(i)) is not None for i in range(len(index)))
    index.close()


def test_remove_label_takes_a_label_typed_in_composed_form_for_a_folder_named_in_decomposed_form(face_index, cli, tmp_path):
    """macOS names folders in decomposed Unicode (NFD); a label typed on a keyboard is composed (NFC):
    one label, as evaluate matches folder names."""
    import unicodedata

    run, gallery = face_index
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    folder = tmp_path / "more"
    (folder / unicodedata.normalize("NFD", "Zoë")).mkdir(parents=True)
    shutil.copy(dataset(SCENES / "single" / "s35" / "1.jpg"), folder / unicodedata.normalize("NFD", "Zoë") / "1.jpg")
    assert cli("index", copy, "--add", folder, "--quiet").code == 0
    removed = cli("index", copy, "--remove-label", unicodedata.normalize("NFC", "Zoë"), "--json")
    assert removed.code == 0, removed.err
    assert json.loads(removed.out)["removed"] == 1
