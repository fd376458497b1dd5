"""An index serves files only inside its gallery folders (retrieval.run.resolve_logged_path), and a
run moved from another machine is re-rooted with ``--gallery-root``: through the real CLI."""

import json
import logging
import shutil

import pytest

from cli_runner import cli  # noqa: F401 (fixture)
from index_helpers import FAST, gallery_dir, index_files, indexed_run, run_dir, write_images  # noqa: F401 (fixtures)
from retrieval.errors import RetrievalError
from retrieval.index import GalleryIndex, build_index, read_index_metadata


@pytest.fixture
def crafted(tmp_path, indexed_run):
    """A copy of the indexed run and a function that rewrites its gallery.json."""
    run = tmp_path / "run"
    shutil.copytree(indexed_run, run, symlinks=True)
    path = run / "index" / "gallery.json"

    def craft(change):
        metadata = json.loads(path.read_text())
        change(metadata)
        path.write_text(json.dumps(metadata))
        return run

    return craft


def _query(gallery_dir):
    return gallery_dir / "apple" / "0_0.png"


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(roots=["/"]), "refusing the root /"),
    (lambda m: m.update(roots=["/proc/self/root"]), "refusing the root /proc/self/root"),
    (lambda m: m["items"]["path"].__setitem__(0, "../../../etc/hostname"), "climbs out"),
    (lambda m: m["items"]["path"].__setitem__(0, "/etc/hostname"), "absolute path"),
    (lambda m: m["items"].pop("label"), "a path, a label and a root each"),
    (lambda m: m["items"]["root"].__setitem__(0, 5), "not one of its 1 roots"),
    (lambda m: m.pop("files"), "no 'files'"),
    (lambda m: m.update(roots="/srv/photos"), "'roots' is not a list"),
    (lambda m: m.update(without_face=[{"root": 3, "path": "a.png", "label": None}]), "photos without a face need a root"),
    (lambda m: m.update(without_face=[{"root": 0, "path": "../a.png", "label": None}]), "climbs out"),
])
def test_a_crafted_gallery_json_is_a_one_line_error_and_no_file_is_served(crafted, gallery_dir, cli, change, message):
    run = crafted(change)
    done = cli("search", run, _query(gallery_dir), "--json", "--device", "cpu")
    assert done.code == 2 and done.out == "" and len(done.lines) == 1, done.err
    assert done.lines[0].startswith("error: ") and message in done.lines[0]


def test_a_gallery_image_replaced_by_a_link_out_of_the_gallery_is_refused_when_shown(tmp_path, run_dir):
    gallery = write_images(tmp_path / "gallery", ["a", "b"], 2)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, symlinks=True)
    build_index(run, gallery, n_trees=2, **FAST)
    (tmp_path / "private.png").write_bytes((gallery / "a" / "0_0.png").read_bytes())
    (gallery / "a" / "0_0.png").unlink()
    (gallery / "a" / "0_0.png").symlink_to(tmp_path / "private.png")
    index = GalleryIndex.load(run, load_model=False)
    with pytest.raises(Exception, match="through a symbolic link"):
        index.path(index.relative_paths.index("a/0_0.png"))


def test_images_reached_through_links_that_leave_the_gallery_are_not_indexed(tmp_path, run_dir, caplog):
    gallery = write_images(tmp_path / "gallery", ["a"], 3)
    elsewhere = write_images(tmp_path / "elsewhere", ["b"], 2, seed=3)
    (gallery / "b").symlink_to(elsewhere / "b")
    (gallery / "a" / "link.png").symlink_to(gallery / "a" / "0_0.png")  # a link inside the gallery is fine
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, symlinks=True)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        metadata = build_index(run, gallery, n_trees=2, **FAST)
    assert sorted(metadata["items"]["path"]) == ["a/0_0.png", "a/0_1.png", "a/0_2.png", "a/link.png"]
    assert any("2 image(s) reached through symbolic links that leave the folder" in r.getMessage() for r in caplog.records)


def test_a_gallery_made_only_of_links_out_of_it_is_refused_saying_so(tmp_path, run_dir, caplog):
    """One line: the refusal, without the count warning before it (which would say the same)."""
    elsewhere = write_images(tmp_path / "elsewhere", ["a", "b"], 2)
    gallery = tmp_path / "subset"
    for image in sorted(elsewhere.rglob("*.png")):  # a subset made with ln -s
        (gallery / image.parent.name).mkdir(parents=True, exist_ok=True)
        (gallery / image.parent.name / image.name).symlink_to(image)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, symlinks=True)
    with caplog.at_level(logging.WARNING, logger="retrieval"), pytest.raises(
            RetrievalError, match="every image is reached through a symbolic link that leaves the folder"):
        build_index(run, gallery, n_trees=2, **FAST)
    assert not (run / "index" / "gallery.json").exists()
    assert not [r.getMessage() for r in caplog.records if "symbolic link" in r.getMessage()]


def test_a_run_moved_to_another_machine_is_re_rooted_with_gallery_root(tmp_path, indexed_run, gallery_dir, cli):
    machine = tmp_path / "other-machine"
    run, gallery = machine / "run", machine / "photos"
    shutil.copytree(indexed_run, run, symlinks=True)  # as cp -a / rsync -a / tar carry it
    shutil.copytree(gallery_dir, gallery)
    query = gallery / "apple" / "0_0.png"

    stale = json.loads(cli("search", run, query, "--json", "--device", "cpu", "-k", "2").out)
    assert all(n["path"].startswith(str(gallery_dir.resolve())) for n in stale["neighbours"])  # the old machine's folder
    moved = cli("search", run, query, "--json", "--device", "cpu", "-k", "2", "--gallery-root", gallery)
    assert moved.code == 0, moved.err
    neighbours = json.loads(moved.out)["neighbours"]
    assert neighbours[0]["path"] == str(query.resolve()) and neighbours[0]["distance"] < 0.01

    twice = cli("search", run, query, "--gallery-root", gallery, "--gallery-root", gallery, "--device", "cpu")
    assert twice.code == 2 and "give one --gallery-root for each" in twice.lines[0]
    system = cli("search", run, query, "--gallery-root", "/", "--device", "cpu")
    assert system.code == 2 and "refusing the root /" in system.lines[0]


def test_index_add_with_gallery_root_records_the_new_roots(tmp_path, indexed_run, gallery_dir, cli):
    run, gallery = tmp_path / "run", tmp_path / "photos"
    shutil.copytree(indexed_run, run, symlinks=True)
    shutil.copytree(gallery_dir, gallery)
    extra = write_images(tmp_path / "extra", ["quince"], 2, seed=5)
    done = cli("index", run, "--add", extra, "--gallery-root", gallery, "--quiet", "--device", "cpu", "--workers", "0", "--json")
    assert done.code == 0, done.err
    metadata = json.loads((run / "index" / "gallery.json").read_text())
    assert metadata["roots"] == [str(gallery.resolve()), str(extra.resolve())] and metadata["n_items"] == 18 + 2
    index = GalleryIndex.load(run, load_model=False)
    assert all(index.path(i).is_file() for i in range(len(index)))
    again = cli("search", run, gallery / "apple" / "0_0.png", "--gallery-root", gallery, "--device", "cpu", "-k", "1")
    assert again.code == 0 and not again.lines, again.err  # the root the app was started with, now recorded: nothing to re-root
    misplaced = cli("index", run, gallery, "--gallery-root", gallery)
    assert misplaced.code == 2 and "give it with --add" in misplaced.lines[0]


def test_index_add_with_gallery_root_records_the_new_root_when_nothing_is_new(tmp_path, run_dir, gallery_dir, cli):
    """The gallery moved (photos -> moved), nothing new in it: `--add moved --gallery-root moved` adds
    nothing and records the new place, so that search no longer warns that the folder moved."""
    run, gallery, moved = tmp_path / "run", tmp_path / "photos", tmp_path / "moved"
    shutil.copytree(run_dir, run)
    shutil.copytree(gallery_dir, gallery)
    build_index(run, gallery, n_trees=2, **FAST)
    gallery.rename(moved)
    done = cli("index", run, "--add", moved, "--gallery-root", moved, "--quiet", "--device", "cpu", "--workers", "0", "--json")
    assert done.code == 0, done.err
    assert read_index_metadata(run)["roots"] == [str(moved.resolve())]
    summary = json.loads(done.out)
    assert (summary["added"], summary["roots_recorded"], summary["n_already_indexed"], summary["n_items"]) == (False, True, 18, 18)
    index = GalleryIndex.load(run, load_model=False)  # its data files carried over, checked by their recorded hashes
    assert len(index) == 18 and all(index.path(i).is_file() and index.path(i).is_relative_to(moved.resolve())
                                    for i in range(len(index)))
    index.close()
    shown = cli("search", run, moved / "apple" / "0_0.png", "--device", "cpu", "-k", "1")
    assert shown.code == 0 and not shown.lines, shown.err  # no "folder moved" warning any more
    said = cli("index", run, "--add", moved, "--quiet", "--device", "cpu", "--workers", "0")
    assert said.code == 0 and said.out.startswith("nothing added: ") and "18 image(s) of" in said.out, said.out


def test_index_add_of_a_moved_gallery_without_gallery_root_is_refused_and_adds_nothing(tmp_path, run_dir, gallery_dir, cli):
    """Re-adding a gallery folder that moved, without --gallery-root, indexed every image a second
    time (after the "folder moved" warning): it is refused in one line that says what to give."""
    run, gallery, moved = tmp_path / "run", tmp_path / "photos", tmp_path / "moved"
    shutil.copytree(run_dir, run)
    shutil.copytree(gallery_dir, gallery)
    build_index(run, gallery, n_trees=2, **FAST)
    gallery.rename(moved)
    before = index_files(run)
    done = cli("index", run, "--add", moved, "--quiet", "--device", "cpu", "--workers", "0")
    assert done.code == 2 and done.lines[-1].startswith("error: "), done.err
    assert f"--gallery-root {moved}" in done.lines[-1] and "nothing added" in done.lines[-1]
    assert index_files(run) == before
