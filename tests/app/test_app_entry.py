"""streamlit_app.py itself: the run choice in the sidebar, st.navigation over the pages, and every
page on a run written by `retrieval train` and `retrieval index`."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from app_helpers import APP, PAGE_FILES, bare_run, charts, full_run, gallery, go, neighbour_cards, start, texts, upload  # noqa: F401


def test_navigation_switches_between_the_four_pages(monkeypatch, full_run):
    at = start(monkeypatch, full_run)
    headers = {"Search": "Search the gallery", "Verify": "Verify: same or different?", "Hardest negatives": "Hardest negatives",
               "Embedding map": "Embedding map", "Training": "Training"}
    assert list(PAGE_FILES) == list(headers)
    for page in ["Training", "Embedding map", "Hardest negatives", "Verify", "Search"]:
        assert texts(go(at, page).header) == [headers[page]]


def test_run_without_index_names_the_command_and_other_pages_work(monkeypatch, bare_run):
    at = start(monkeypatch, bare_run)
    assert any("no gallery index" in m for m in texts(at.info))
    assert any(f"retrieval index {bare_run} GALLERY_DIR" in c.value for c in at.code)
    go(at, "Embedding map")
    assert any(f"retrieval index {bare_run} GALLERY_DIR" in c.value for c in at.code)
    go(at, "Training")
    assert len(charts(at)) == 2


def test_a_folder_that_is_not_a_run_gives_one_error(monkeypatch, tmp_path):
    at = start(monkeypatch, tmp_path)
    assert any("not a run directory" in e for e in texts(at.error))


def test_without_a_run_dir_the_sidebar_lists_runs_under_models(monkeypatch, tmp_path, full_run):
    monkeypatch.delenv("RETRIEVAL_RUN_DIR", raising=False)
    models = tmp_path / "models"
    models.mkdir()
    (models / "mine").symlink_to(full_run, target_is_directory=True)
    monkeypatch.chdir(tmp_path)  # the pages are found beside streamlit_app.py, not in the working directory
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    picker = at.selectbox(key="run")
    assert any(Path(option).name == "mine" for option in picker.options)
    picker.set_value(next(o for o in picker.options if Path(o).name == "mine")).run()
    assert any("Upload an image" in m for m in texts(at.info))


def test_every_page_on_a_run_written_by_train_and_index(monkeypatch, tmp_path):
    from retrieval.index import build_index
    from retrieval.sample_data import generate_sample_data
    from retrieval.training import TrainConfig, train

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


def test_the_run_chooser_picks_the_newest_run_that_reads_and_marks_a_broken_one(monkeypatch, tmp_path, full_run):
    """A run whose config.json is corrupt, newest of models/, stays listed but marked, and is not the default:
    the first page is the newest readable run's, not an error; picking the broken run says why."""
    import os

    monkeypatch.delenv("RETRIEVAL_RUN_DIR", raising=False)
    models = tmp_path / "models"
    models.mkdir()
    (models / "mine").symlink_to(full_run, target_is_directory=True)
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_text('{"backbone": ')
    newest = (full_run / "config.json").stat().st_mtime + 60
    os.utime(models / "broken" / "config.json", (newest, newest))
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    picker = at.selectbox(key="run")
    assert [Path(option).name.split(" (")[0] for option in picker.options] == ["broken", "mine"]  # newest first
    assert "unreadable: corrupt JSON" in picker.options[0] and "unreadable" not in picker.options[1]
    assert Path(picker.value).name == "mine" and not texts(at.error)
    assert any("Upload an image" in m for m in texts(at.info))
    picker.set_value(str(models / "broken")).run()
    assert any("corrupt JSON" in e for e in texts(at.error))


def test_the_sidebar_says_where_the_run_came_from(monkeypatch, full_run):
    at = start(monkeypatch, full_run)  # RETRIEVAL_RUN_DIR, as `retrieval app` hands the run to Streamlit
    assert "The run set in RETRIEVAL_RUN_DIR" in texts(at.sidebar.caption)
