"""Every page on runs trained without class labels and on galleries without labels.

A run of `retrieval train --unlabelled` on a flat folder (no labels, no held-out classes) and its
flat gallery index, an index whose labels read None or -1, and a --pairs config: every page
renders and the widgets that need class labels are absent.
"""

import json
import shutil

import pytest

import fake_runs
from app_helpers import K_DEFAULT, assert_no_label_widgets, charts, full_run, gallery, go, layer_rows, neighbour_cards, start, texts, upload  # noqa: F401


@pytest.fixture(scope="module")
def unlabelled_run(tmp_path_factory):
    """`retrieval train --unlabelled` for one epoch on a flat folder of 16 generated images (so no
    held-out classes), indexed on that folder: a gallery without labels. Returns (run, folder)."""
    from retrieval.index import build_index
    from retrieval.sample_data import generate_sample_data
    from retrieval.training import TrainConfig, train

    root = tmp_path_factory.mktemp("unlabelled")
    generate_sample_data(root / "data", n_train_classes=4, n_test_classes=1, images_per_class=4, image_size=32)
    flat = root / "flat"
    flat.mkdir()
    for path in sorted((root / "data" / "train").rglob("*.png")):
        shutil.copy(path, flat / path.name)
    run = root / "run"
    train(TrainConfig(data_dir=flat, out=run, epochs=1, unlabelled=True, loss="infonce", batch_size=4,
                      backbone="resnet10t", embedding_dim=16, image_size=32, num_workers=0, precision="fp32",
                      hardest_per_epoch=10), progress=False)
    build_index(run, flat, n_trees=4, device="cpu", num_workers=0, precision="fp32")
    return run, flat


def test_every_page_on_an_unlabelled_run_with_a_flat_gallery_hides_what_needs_labels(monkeypatch, unlabelled_run):
    run, flat = unlabelled_run
    config = json.loads((run / "config.json").read_text())
    assert config["mode"] == "unlabelled" and config["has_validation"] is False
    at = start(monkeypatch, run)
    assert any("unlabelled (no class labels)" in c for c in texts(at.sidebar.caption))
    assert not any("mirror" in c or "faces:" in c or "grey" in c for c in texts(at.sidebar.caption)), "whole colour images, one view each"
    query = sorted(flat.iterdir())[0]
    upload(at, query.name, query.read_bytes())
    assert len(neighbour_cards(at)) == K_DEFAULT
    assert neighbour_cards(at)[0].startswith(f"**1. {query.name}**")  # the file name stands in for the label
    assert [c for c in charts(at) if "layer" in c]  # the margin picture
    assert any("asked for no margin between a match and a non-match" in m for m in texts(at.markdown))  # infonce: no ε band
    assert any("no class labels" in c for c in texts(at.caption))
    assert_no_label_widgets(at)

    at.radio(key="query_source").set_value("Pick from the gallery").run()
    assert_no_label_widgets(at)
    next(b for b in at.button if b.key and b.key.startswith("pick-")).click().run()
    assert not at.exception
    assert len(neighbour_cards(at)) == K_DEFAULT
    assert any(c == "the query itself is left out of the results" for c in texts(at.caption))
    assert not any("class None" in c for c in texts(at.caption))
    assert_no_label_widgets(at)

    go(at, "Hardest negatives")
    triples = [m for m in texts(at.markdown) if "d_ap = " in m and "violation" in m]
    assert triples
    roles = texts(at.markdown)
    assert roles.count("**view 1**") == roles.count("**view 2**") == roles.count("**negative**") == len(triples)
    assert not any(m.startswith(("anchor:", "positive:")) for m in roles)
    assert any("two augmented views of one file" in c for c in texts(at.caption))
    titles = [c.get("title") for c in charts(at)]
    assert titles[0] == "The logged hardest, each epoch" and "Active fraction" in titles  # hardness panels, a chart each
    assert len(at.dataframe) == 0 and not any("confused in" in c for c in texts(at.caption))
    assert_no_label_widgets(at)
    at.checkbox(key="mining_recurring").check().run()
    assert not at.exception

    go(at, "Embedding map")
    (spec,) = charts(at)
    assert "color" not in spec["layer"][0]["encoding"]
    assert len(layer_rows(spec, 0)) == 16 and len(spec["layer"]) == 3  # the gallery, its pictures and the last query
    assert any("not coloured" in c for c in texts(at.caption))

    go(at, "Training")
    (curves,) = charts(at)
    assert {r["metric"] for r in curves["datasets"][curves["data"]["name"]]} == {"training loss", "active fraction (within ε; the loss has no margin)"}  # InfoNCE: every tuple has a loss
    assert any("held out no classes" in c for c in texts(at.caption))
    assert "Held-out distances" not in texts(at.subheader) and not texts(at.info)


def test_gallery_index_with_labels_none_or_minus_one_and_two_folders(monkeypatch, tmp_path, unlabelled_run):
    """An index over two flat folders whose labels read None or -1: the search page works without
    class widgets and the map is coloured by folder."""
    from retrieval.index import add_to_index

    run, flat = unlabelled_run
    copy = shutil.copytree(run, tmp_path / "run")
    more = tmp_path / "more"
    more.mkdir()
    for path in sorted(flat.iterdir())[:4]:
        shutil.copy(path, more / f"extra-{path.name}")
    add_to_index(copy, more, device="cpu", num_workers=0, precision="fp32")
    metadata_path = copy / "index" / "gallery.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["items"]["label"] = [None if i % 2 else -1 for i in range(metadata["n_items"])]
    metadata_path.write_text(json.dumps(metadata))

    at = upload(start(monkeypatch, copy), "q.png", fake_runs.png_bytes((30, 90, 200)))
    assert len(neighbour_cards(at)) == K_DEFAULT
    assert not any("-1" in card.split("**")[1] for card in neighbour_cards(at))
    assert_no_label_widgets(at)
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    next(b for b in at.button if b.key and b.key.startswith("pick-")).click().run()
    assert not at.exception and len(neighbour_cards(at)) == K_DEFAULT
    assert not any("class -1" in c for c in texts(at.caption))
    assert_no_label_widgets(at)

    go(at, "Embedding map")
    (spec,) = charts(at)
    assert spec["layer"][0]["encoding"]["color"]["legend"]["title"] == "folder"
    assert {p["label"] for p in layer_rows(spec, 0)} == {flat.name, "more"}
    assert any("coloured by the folder" in c for c in texts(at.caption))


def test_a_pairs_run_shows_triplets_without_class_filter_and_curves_on_held_out_classes(monkeypatch, tmp_path, gallery):
    """config.json of `retrieval train --pairs` (with held-out classes): the mining log's labels are
    linked groups, not classes."""
    run = fake_runs.make_run(tmp_path / "pairs", gallery, index=False)
    config = json.loads((run / "config.json").read_text())
    config.update(mode="pairs", labelled=False, has_validation=True)
    (run / "config.json").write_text(json.dumps(config))
    groups = {name: f"component-{i:04d}" for i, name in enumerate(fake_runs.CLASSES)}
    for log in (run / "mining").glob("epoch_*.jsonl"):
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        for row in rows:
            for role in ("anchor", "positive", "negative"):
                row[f"{role}_label"] = groups[row[f"{role}_label"]]
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))

    at = go(start(monkeypatch, run), "Hardest negatives")
    roles = texts(at.markdown)
    assert roles.count("**anchor**") == roles.count("**positive**") == roles.count("**negative**") == 3
    assert any(c.endswith("· component-0000") for c in texts(at.caption))
    assert any("--pairs" in c for c in texts(at.caption))
    assert len(at.dataframe) == 0
    assert_no_label_widgets(at)
    at.checkbox(key="mining_recurring").check().run()
    assert len([m for m in texts(at.markdown) if "d_ap = " in m]) == 2

    go(at, "Training")
    assert len(charts(at)) == 2  # curves with Recall@1 / MAP@R, and the held-out histogram
    assert any("used only to measure" in c for c in texts(at.caption))


def test_a_partly_labelled_gallery_has_no_class_checks_and_says_how_many_items_lack_a_label(monkeypatch, tmp_path, full_run, gallery):
    """After `index --add` of a flat folder some items have no label: a class check would count an
    unlabelled neighbour of the query's own class as neither ✓ nor ✗, so the page offers none (as
    the command's warning says) and names how many items lack a label."""
    from retrieval.index import add_to_index

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    flat = tmp_path / "flat"
    flat.mkdir()
    added = sorted(gallery.rglob("*.png"))[:3]
    for k, path in enumerate(added):
        shutil.copy(path, flat / f"loose_{k}.png")
    add_to_index(run, flat, device="cpu", num_workers=0)
    at = start(monkeypatch, run)
    query = sorted(gallery.rglob("*.png"))[0]
    upload(at, query.name, query.read_bytes())
    assert any(c.startswith(":material/info: 3 of the gallery's") and "no class label" in c for c in texts(at.caption)), texts(at.caption)
    assert_no_label_widgets(at)
    assert not any("✓" in m or "✗" in m for m in neighbour_cards(at))
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    next(b for b in at.button if b.key and b.key.startswith("pick-")).click().run()
    assert not at.exception
    assert_no_label_widgets(at)
    assert not any("✓" in m or "✗" in m for m in neighbour_cards(at))
