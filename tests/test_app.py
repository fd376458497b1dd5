"""streamlit_app.py through Streamlit's AppTest (no browser), page by page, and `retrieval app`.

Runs are small fakes written like `retrieval train` writes them (tests/fake_runs.py): a random-init
resnet10t at 32 px, a 4-class gallery of 16 images, metrics, a mining log over 3 epochs,
held-out distances, and, for one run, an index. The run directory is given through
RETRIEVAL_RUN_DIR, as a user would without command-line arguments. The last tests use a run of
`retrieval train --unlabelled` on a flat folder (no labels, no held-out classes) and its flat
gallery index, an index whose labels read None or -1, and a --pairs config: every page renders and
the widgets that need class labels are absent.
"""

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

import fake_runs
from retrieval import data
from retrieval.errors import RetrievalError

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
K_DEFAULT = 10


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    return fake_runs.make_gallery(tmp_path_factory.mktemp("gallery"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, gallery):
    return fake_runs.make_run(tmp_path_factory.mktemp("runs") / "full", gallery)


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory, gallery):
    """A run with a model, metrics and held-out distances, but no index and no mining log."""
    return fake_runs.make_run(tmp_path_factory.mktemp("runs") / "bare", gallery, index=False, mining=False)


def start(monkeypatch, run_dir) -> AppTest:
    monkeypatch.setenv("RETRIEVAL_RUN_DIR", str(run_dir))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def go(at: AppTest, page: str) -> AppTest:
    at.radio(key="page").set_value(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def neighbour_cards(at: AppTest) -> list[str]:
    return [m for m in texts(at.markdown) if "d = " in m and "cos = " in m]


def charts(at: AppTest) -> list[dict]:
    """Each chart's Vega-Lite spec with ``"datasets"``: name -> rows (Streamlit sends them as Arrow)."""
    import pyarrow as pa

    specs = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        spec["datasets"] = {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pylist() for d in chart.proto.datasets}
        specs.append(spec)
    return specs


def layer_rows(spec: dict, layer: int) -> list[dict]:
    data = spec["layer"][layer].get("data") or spec["data"]
    return spec["datasets"][data["name"]]


def upload(at: AppTest, name: str, payload: bytes, mime: str = "image/png") -> AppTest:
    at.file_uploader(key="upload").set_value((name, payload, mime)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ----------------------------------------------------------------------------- Search


def test_search_page_waits_for_an_upload(monkeypatch, full_run):
    at = start(monkeypatch, full_run)
    assert at.radio(key="page").value == "Search"
    assert any("Upload an image" in m for m in texts(at.info))
    assert neighbour_cards(at) == []


def test_upload_shows_k_neighbours_with_distances_and_margin_band(monkeypatch, full_run):
    at = upload(start(monkeypatch, full_run), "q.png", fake_runs.png_bytes((10, 220, 30)))
    cards = neighbour_cards(at)
    assert len(cards) == K_DEFAULT
    assert cards[0].startswith("**1. ")
    distances = [float(c.split("d = ")[1].split()[0]) for c in cards]
    assert distances == sorted(distances)
    (margin_spec,) = [c for c in charts(at) if "layer" in c]
    band = layer_rows(margin_spec, 0)
    assert band[0]["low"] == pytest.approx(distances[0], abs=1e-3)
    assert band[0]["high"] == pytest.approx(distances[0] + fake_runs.MARGIN, abs=1e-3)
    assert any("The band runs from the nearest distance" in m for m in texts(at.markdown))

    at.number_input(key="k").set_value(3).run()
    assert len(neighbour_cards(at)) == 3


def test_upload_with_a_known_class_compares_nearest_positive_and_negative(monkeypatch, full_run):
    at = upload(start(monkeypatch, full_run), "q.png", fake_runs.png_bytes((0, 255, 40)))
    at.selectbox(key="upload_label").set_value("apple").run()
    assert not at.exception
    verdicts = texts(at.success) + texts(at.warning) + texts(at.error)
    assert len(verdicts) == 1 and "d_an − d_ap" in verdicts[0]
    assert any(m.startswith("positive: **apple**") for m in texts(at.markdown))
    assert any(m.startswith("negative: **") and "apple" not in m for m in texts(at.markdown))


def test_pick_from_gallery_leaves_the_query_out_and_knows_its_class(monkeypatch, full_run):
    at = start(monkeypatch, full_run)
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    assert any("Pick a gallery image" in m for m in texts(at.info))
    at.selectbox(key="pick_class").set_value("banana").run()
    buttons = [b for b in at.button if b.key and b.key.startswith("pick-")]
    assert len(buttons) == fake_runs.IMAGES_PER_CLASS
    buttons[0].click().run()
    assert not at.exception
    cards = neighbour_cards(at)
    assert len(cards) == K_DEFAULT
    assert buttons[0].label == "banana_0.png"
    assert "banana_0.png" not in texts(at.caption)  # neighbour cards caption their file name
    assert any("the query itself is left out" in c for c in texts(at.caption))
    assert len(texts(at.success) + texts(at.warning) + texts(at.error)) == 1


def test_bad_upload_shows_an_error_and_the_app_keeps_working(monkeypatch, full_run):
    at = upload(start(monkeypatch, full_run), "holiday.png", b"this is not a picture at all")
    errors = texts(at.error)
    assert len(errors) == 1 and "cannot read image holiday.png" in errors[0]
    assert neighbour_cards(at) == []
    upload(at, "good.png", fake_runs.png_bytes((5, 5, 250)))
    assert texts(at.error) == [] and len(neighbour_cards(at)) == K_DEFAULT
    assert charts(go(at, "Training"))


def test_oversized_upload_is_refused_with_a_clear_message(monkeypatch, full_run):
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 500)
    at = upload(start(monkeypatch, full_run), "huge.png", fake_runs.png_bytes((1, 2, 3), size=40))
    errors = texts(at.error)
    assert len(errors) == 1 and "too large" in errors[0] and "huge.png" in errors[0]


def test_empty_upload_is_refused(monkeypatch, full_run):
    at = upload(start(monkeypatch, full_run), "empty.jpg", b"", "image/jpeg")
    assert any("empty file" in e for e in texts(at.error))


# ----------------------------------------------------------------------------- other pages


def test_hardest_negatives_page_shows_triples_filters_and_recurring_pairs(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Hardest negatives")
    assert any("3** logged triplets in epoch 3" in m for m in texts(at.markdown))
    triples = [m for m in texts(at.markdown) if "d_ap = " in m and "violation" in m]
    assert len(triples) == 3
    gaps = [float(m.split("d_an − d_ap = ")[1].split()[0]) for m in triples]
    assert gaps == sorted(gaps)
    assert "violation **+0.1400**" in triples[0]  # margin 0.2 - gap 0.06
    recurring = [m for m in texts(at.markdown) if "pair was hard in epochs 1, 2, 3" in m]
    assert len(recurring) == 2
    hardness = [c for c in charts(at) if "hconcat" in c]
    assert len(hardness) == 1

    at.selectbox(key="mining_class").set_value("cherry").run()
    assert len([m for m in texts(at.markdown) if "d_ap = " in m]) == 1
    at.selectbox(key="mining_class").set_value("(all classes)").run()
    at.checkbox(key="mining_recurring").check().run()
    assert len([m for m in texts(at.markdown) if "d_ap = " in m]) == 2
    at.select_slider(key="mining_epoch").set_value(1).run()
    assert any("in epoch 1" in m for m in texts(at.markdown))
    assert len(at.dataframe) == 1  # the confused class pairs


def test_large_logs_and_galleries_are_paged(monkeypatch, tmp_path, gallery, full_run):
    run = fake_runs.make_run(tmp_path / "long", gallery, index=False, epochs=1)
    rows = [dict(fake_runs.mining_rows(1)[0], d_an=0.5 + i / 100, d_an_minus_d_ap=i / 100) for i in range(20)]
    (run / "mining" / "epoch_001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    at = go(start(monkeypatch, run), "Hardest negatives")
    shown = lambda: [m for m in texts(at.markdown) if "d_ap = " in m]  # noqa: E731
    assert len(shown()) == 8 and shown()[0].startswith("**#1**")
    at.number_input(key="mining_page").set_value(3).run()
    assert len(shown()) == 4 and shown()[0].startswith("**#17**")

    at = start(monkeypatch, full_run)
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    assert len([b for b in at.button if b.key.startswith("pick-")]) == 12
    at.number_input(key="pick_page").set_value(2).run()
    assert len([b for b in at.button if b.key.startswith("pick-")]) == 16 - 12


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


def test_training_page_shows_curves_and_held_out_distances(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Training")
    specs = charts(at)
    assert len(specs) == 2
    curves = next(s for s in specs if "facet" in s)
    assert {r["metric"] for r in curves["datasets"][curves["data"]["name"]]} >= {"training loss", "Recall@1 (held-out classes)"}
    assert any("negative pairs of held-out classes" in c for c in texts(at.caption))


def test_run_without_index_names_the_command_and_other_pages_work(monkeypatch, bare_run):
    at = start(monkeypatch, bare_run)
    assert any("no gallery index" in m for m in texts(at.info))
    assert any(f"retrieval index {bare_run} GALLERY_DIR" in c.value for c in at.code)
    go(at, "Embedding map")
    assert any(f"retrieval index {bare_run} GALLERY_DIR" in c.value for c in at.code)
    go(at, "Training")
    assert len(charts(at)) == 2


def test_run_without_mining_log_says_so(monkeypatch, bare_run):
    at = go(start(monkeypatch, bare_run), "Hardest negatives")
    assert any("no mining log" in m for m in texts(at.info))
    assert not at.error


def test_run_without_metrics_or_val_distances_says_so(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "untrained", gallery, index=False, mining=False, metrics=False, val_distances=False)
    at = go(start(monkeypatch, run), "Training")
    infos = texts(at.info)
    assert any("no metrics.jsonl" in m for m in infos) and any("no val_distances.json" in m for m in infos)


def test_a_folder_that_is_not_a_run_gives_one_error(monkeypatch, tmp_path):
    at = start(monkeypatch, tmp_path)
    assert any("not a run directory" in e for e in texts(at.error))


def test_without_a_run_dir_the_sidebar_lists_runs_under_models(monkeypatch, tmp_path, full_run):
    monkeypatch.delenv("RETRIEVAL_RUN_DIR", raising=False)
    models = tmp_path / "models"
    models.mkdir()
    (models / "mine").symlink_to(full_run, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    picker = at.selectbox(key="run")
    assert any(Path(option).name == "mine" for option in picker.options)
    picker.set_value(next(o for o in picker.options if Path(o).name == "mine")).run()
    assert any("Upload an image" in m for m in texts(at.info))


# ----------------------------------------------------------------------------- retrieval app


def run_cli(monkeypatch, *args):
    from retrieval import cli

    calls = []
    monkeypatch.setattr("os.execvp", lambda file, argv: calls.append(argv))
    result = CliRunner().invoke(cli.app, ["app", *map(str, args)])
    return result, calls


def test_app_command_starts_streamlit_on_the_run_and_prints_the_url(monkeypatch, full_run):
    result, calls = run_cli(monkeypatch, full_run, "--port", "8765")
    assert result.exit_code == 0, result.output
    assert "http://localhost:8765" in result.output
    (argv,) = calls
    assert argv[1:4] == ["-m", "streamlit", "run"] and Path(argv[4]) == APP
    assert argv[argv.index("--server.port") + 1] == "8765"
    assert argv[argv.index("--server.headless") + 1] == "true"
    assert argv[-2:] == ["--", str(full_run.resolve())]


def test_app_command_rejects_a_folder_that_is_not_a_run(monkeypatch, tmp_path):
    result, calls = run_cli(monkeypatch, tmp_path / "nowhere")
    assert calls == []
    assert isinstance(result.exception, RetrievalError) and "run directory not found" in str(result.exception)


# ----------------------------------------------------------------------------- a really trained run


def test_every_page_on_a_run_written_by_train_and_index(monkeypatch, tmp_path):
    from retrieval.index import build_index
    from retrieval.sample_data import generate_sample_data
    from retrieval.train import TrainConfig, train

    data = tmp_path / "data"
    generate_sample_data(data, n_train_classes=5, n_test_classes=2, images_per_class=4, image_size=32)
    run = tmp_path / "trained"
    train(TrainConfig(data_dir=data / "train", out=run, epochs=1, backbone="resnet10t", embedding_dim=16,
                      image_size=32, classes_per_batch=2, images_per_class=2, num_workers=0, precision="fp32",
                      hardest_per_epoch=10, val_fraction=0.4), progress=False)
    build_index(run, data / "test", n_trees=4, device="cpu", num_workers=0, precision="fp32")

    query = next((data / "catalog").rglob("*.png"))
    at = upload(start(monkeypatch, run), query.name, query.read_bytes())
    assert len(neighbour_cards(at)) == 2 * 4  # the whole test gallery
    for page in ("Hardest negatives", "Embedding map", "Training"):
        go(at, page)
        assert not at.error, (page, texts(at.error))
    go(at, "Hardest negatives")
    assert [m for m in texts(at.markdown) if "d_ap = " in m]
    assert not any("cannot read" in c for c in texts(at.caption))  # logged paths resolve under data_dir


# ----------------------------------------------------------------------------- runs trained without labels

LABEL_WIDGETS = {"pick_class", "upload_label", "mining_class"}
LABEL_HEADINGS = {"Nearest positive and nearest negative", "Class pairs confused most often"}


def assert_no_label_widgets(at: AppTest) -> None:
    assert not {s.key for s in at.selectbox} & LABEL_WIDGETS
    assert not set(texts(at.subheader)) & LABEL_HEADINGS
    assert not texts(at.success) + texts(at.warning) + texts(at.error)  # no positive / negative verdict, no error


@pytest.fixture(scope="module")
def unlabelled_run(tmp_path_factory):
    """`retrieval train --unlabelled` for one epoch on a flat folder of 16 generated images (so no
    held-out classes), indexed on that folder: a gallery without labels. Returns (run, folder)."""
    from retrieval.index import build_index
    from retrieval.sample_data import generate_sample_data
    from retrieval.train import TrainConfig, train

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
    query = sorted(flat.iterdir())[0]
    upload(at, query.name, query.read_bytes())
    assert len(neighbour_cards(at)) == K_DEFAULT
    assert neighbour_cards(at)[0].startswith(f"**1. {query.name}**")  # the file name stands in for the label
    assert [c for c in charts(at) if "layer" in c]  # the margin picture
    assert any("The band runs from the nearest distance" in m for m in texts(at.markdown))
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
    assert [c for c in charts(at) if "hconcat" in c]  # hardness and active fraction
    assert len(at.dataframe) == 0 and not any("confused in" in c for c in texts(at.caption))
    assert_no_label_widgets(at)
    at.checkbox(key="mining_recurring").check().run()
    assert not at.exception

    go(at, "Embedding map")
    (spec,) = charts(at)
    assert "color" not in spec["layer"][0]["encoding"]
    assert len(layer_rows(spec, 0)) == 16 and len(spec["layer"]) == 2  # the gallery and the last query
    assert any("not coloured" in c for c in texts(at.caption))

    go(at, "Training")
    (curves,) = charts(at)
    assert {r["metric"] for r in curves["datasets"][curves["data"]["name"]]} == {"training loss", "active fraction (loss > 0)"}
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
