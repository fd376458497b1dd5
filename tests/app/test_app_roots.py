"""A run moved from another machine, in the app: its gallery and training images are found again
through RETRIEVAL_GALLERY_ROOTS / RETRIEVAL_DATA_ROOT (what ``retrieval app --gallery-root /
--data-root`` set), and a crafted root is an error box, not a file served."""

import json
import shutil

import fake_runs
from app_helpers import full_run, gallery, go, start, texts, upload  # noqa: F401 (fixtures)


def _unreadable(at) -> int:
    return sum("cannot read" in caption for caption in texts(at.caption))


def _moved(tmp_path, full_run, gallery):
    """A copy of the run whose files name folders of another machine, and the gallery's new place."""
    run = shutil.copytree(full_run, tmp_path / "run", symlinks=True)
    photos = shutil.copytree(gallery, tmp_path / "photos")
    gone = str(tmp_path / "old-machine" / "gallery")
    for name, change in (("index/gallery.json", lambda m: m.update(roots=[gone])), ("config.json", lambda c: c.update(data_dir=gone))):
        values = json.loads((run / name).read_text())
        change(values)
        (run / name).write_text(json.dumps(values))
    return run, photos


def test_a_moved_run_finds_its_images_again_once_re_rooted(monkeypatch, tmp_path, full_run, gallery):
    run, photos = _moved(tmp_path, full_run, gallery)
    stale = upload(start(monkeypatch, run), "q.png", fake_runs.png_bytes((10, 220, 30)))
    assert _unreadable(stale) > 0
    (moved,) = [w for w in texts(stale.warning) if "holds none of the first images" in w]  # said on the page, not only in the log
    assert "old-machine" in moved and "--gallery-root" in moved
    assert any("holds none of the first images" in w for w in texts(go(stale, "Embedding map").warning))
    assert _unreadable(go(stale, "Hardest negatives")) > 0

    monkeypatch.setenv("RETRIEVAL_GALLERY_ROOTS", str(photos))
    monkeypatch.setenv("RETRIEVAL_DATA_ROOT", str(photos))
    at = upload(start(monkeypatch, run), "q.png", fake_runs.png_bytes((10, 220, 30)))
    assert _unreadable(at) == 0 and not texts(at.error)
    assert not any("holds none of the first images" in w for w in texts(at.warning))
    assert _unreadable(go(at, "Hardest negatives")) == 0


def test_an_index_rooted_at_the_file_systems_root_is_an_error_box(monkeypatch, tmp_path, full_run):
    run = shutil.copytree(full_run, tmp_path / "run", symlinks=True)
    metadata = json.loads((run / "index" / "gallery.json").read_text())
    metadata["roots"] = ["/"]
    (run / "index" / "gallery.json").write_text(json.dumps(metadata))
    at = start(monkeypatch, run)
    assert any("refusing the root /" in message for message in texts(at.error))


def test_retrieval_app_hands_checked_roots_to_the_app_and_refuses_a_system_folder(monkeypatch, tmp_path, full_run, gallery):
    import os
    import sys

    import pytest

    from retrieval.cli import main

    calls = []
    monkeypatch.setattr("os.execvp", lambda file, argv: calls.append(argv))
    for name in ("RETRIEVAL_GALLERY_ROOTS", "RETRIEVAL_DATA_ROOT"):  # set by the command: restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "argv", ["retrieval", "app", str(full_run), "--gallery-root", str(gallery), "--data-root", str(gallery)])
    with pytest.raises(SystemExit) as exit:
        main()
    assert exit.value.code in (0, None) and len(calls) == 1
    assert os.environ["RETRIEVAL_GALLERY_ROOTS"] == os.environ["RETRIEVAL_DATA_ROOT"] == str(gallery.resolve())
    monkeypatch.setattr(sys, "argv", ["retrieval", "app", str(full_run), "--gallery-root", "/etc"])
    with pytest.raises(SystemExit) as exit:
        main()
    assert exit.value.code == 2 and len(calls) == 1  # refused before the server starts
