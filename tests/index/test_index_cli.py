"""Tests for the `retrieval index` / `retrieval search` commands over retrieval.index."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from cli_runner import cli  # noqa: F401 (fixture)
from index_helpers import gallery_dir, run_dir, write_images  # noqa: F401 (fixtures)
from retrieval.cli import app
from retrieval.errors import RetrievalError
from retrieval.index import DEFAULT_N_TREES


def test_cli_index_then_search_prints_json_neighbours_and_a_table(tmp_path, run_dir, gallery_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    runner = CliRunner()
    built = runner.invoke(app, ["index", str(run), str(gallery_dir), "--n-trees", "4", "--device", "cpu", "--json", "--quiet"])
    assert built.exit_code == 0, built.output
    summary = json.loads(built.stdout)
    assert summary["n_items"] == 18 and summary["n_trees"] == 4

    query = gallery_dir / "plum" / "2_0.png"
    found = runner.invoke(app, ["search", str(run), str(query), "-k", "4", "--json"])
    assert found.exit_code == 0, found.output
    payload = json.loads(found.stdout)
    assert list(payload) == ["neighbours", "verdict"] and len(payload["neighbours"]) == 4
    first = payload["neighbours"][0]
    assert set(first) == {"path", "label", "distance", "similarity", "match"}
    # a run without a threshold: no match marks, no verdict
    assert first["match"] is None and payload["verdict"] == {"match": None, "label": None, "distance": first["distance"],
                                                              "threshold": None, "path": None, "face": None}
    assert first["path"] == str(query.resolve()) and first["label"] == "plum"

    exact = json.loads(runner.invoke(app, ["search", str(run), str(query), "-k", "4", "--json", "--exact"]).stdout)
    assert [n["path"] for n in exact["neighbours"]] == [n["path"] for n in payload["neighbours"]]

    table = runner.invoke(app, ["search", str(run), str(query), "-k", "2"])
    assert table.exit_code == 0 and "plum" in table.stdout and "distance" in table.stdout
    assert table.stdout.splitlines()[0] == f"2 nearest to {query} (Annoy, 4 trees)", "the heading is one line, however long the path"


def test_cli_search_marks_matches_and_gives_a_verdict_at_the_runs_threshold(tmp_path, run_dir, gallery_dir):
    from retrieval.run import read_config

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(run), str(gallery_dir), "--n-trees", "4", "--device", "cpu", "--quiet"]).exit_code == 0
    query = gallery_dir / "plum" / "2_0.png"

    def search_at(threshold):
        config = read_config(run)
        config.updated(verification={"threshold": threshold, "target_far": 0.01, "far": 0.01, "tar": 0.9,
                                     "n_positive_pairs": 10, "n_negative_pairs": 1000}).write(run)
        return json.loads(runner.invoke(app, ["search", str(run), str(query), "-k", "4", "--json", "--exact"]).stdout)

    wide = search_at(2.0)
    assert all(n["match"] for n in wide["neighbours"])
    assert wide["verdict"]["match"] is True and wide["verdict"]["label"] == "plum" and wide["verdict"]["threshold"] == 2.0
    assert wide["verdict"]["path"] == wide["neighbours"][0]["path"] and wide["verdict"]["face"] is None  # what matched
    middle = sorted(n["distance"] for n in wide["neighbours"])
    tau = (middle[1] + middle[2]) / 2
    split = search_at(tau)
    assert [n["match"] for n in split["neighbours"]] == [True, True, False, False]
    # a query that is not in the gallery, with τ below its nearest distance: "not in the gallery"
    from PIL import Image

    stranger = tmp_path / "stranger.png"
    Image.new("RGB", (32, 32), (0, 0, 0)).save(stranger)
    nearest = json.loads(runner.invoke(app, ["search", str(run), str(stranger), "-k", "1", "--json", "--exact"]).stdout)
    d = nearest["neighbours"][0]["distance"]
    assert d > 0
    query = stranger
    outside = search_at(d / 2)
    assert outside["verdict"] == {"match": False, "label": None, "distance": outside["neighbours"][0]["distance"], "threshold": d / 2,
                                  "path": None, "face": None}
    table = runner.invoke(app, ["search", str(run), str(stranger), "-k", "2"])
    assert table.exit_code == 0 and "no match in the gallery" in table.stdout and "match" in table.stdout


def test_cli_search_in_a_gallery_without_labels_names_the_match_by_its_file(tmp_path, run_dir, gallery_dir):
    from retrieval.run import read_config

    run, flat = tmp_path / "run", tmp_path / "flat"
    shutil.copytree(run_dir, run)
    flat.mkdir()
    for name in ("apple/0_0.png", "plum/2_0.png", "plum/2_1.png"):
        shutil.copy(gallery_dir / name, flat / name.replace("/", "_"))
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(run), str(flat), "--n-trees", "2", "--device", "cpu", "--quiet"]).exit_code == 0
    read_config(run).updated(verification={"threshold": 2.0, "target_far": 0.01, "far": 0.01, "tar": 0.9,
                                           "n_positive_pairs": 10, "n_negative_pairs": 1000}).write(run)
    table = runner.invoke(app, ["search", str(run), str(flat / "plum_2_0.png"), "-k", "2", "--exact"])
    assert table.exit_code == 0, table.output
    assert "match: plum_2_0.png, d = 0.000 ≤ τ = 2.000 at FAR 1 %" in table.stdout, table.stdout


def test_cli_search_table_written_to_a_file_keeps_each_long_path_on_one_line(tmp_path, run_dir, gallery_dir):
    """Output that is not a terminal (CliRunner's, a file, a pipe) is not folded at 80 columns: a row
    a neighbour, its path whole, as grep and scripts read it."""
    run, deep = tmp_path / "run", tmp_path / "g"
    shutil.copytree(run_dir, run)
    name = "a_product_photo_with_a_long_descriptive_name_as_shops_export_them_" * 2 + "0.png"
    (deep / "plum").mkdir(parents=True)
    shutil.copy(gallery_dir / "plum" / "2_0.png", deep / "plum" / name)
    shutil.copy(gallery_dir / "apple" / "0_0.png", deep / "plum" / "short.png")
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(run), str(deep), "--n-trees", "2", "--device", "cpu", "--quiet"]).exit_code == 0
    table = runner.invoke(app, ["search", str(run), str(deep / "plum" / name), "-k", "2", "--exact"])
    assert table.exit_code == 0, table.output
    rows = [line for line in table.stdout.splitlines()[1:] if f"plum/{name}" in line]  # [0]: the heading
    assert len(rows) == 1 and "0.0000" in rows[0], table.stdout


def test_cli_add_appends_a_folder(tmp_path, run_dir, gallery_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    runner = CliRunner()
    fast = ["--device", "cpu", "--workers", "0", "--quiet"]
    assert runner.invoke(app, ["index", str(run), str(gallery_dir), "--n-trees", "3", *fast]).exit_code == 0
    extra = write_images(tmp_path / "extra", ["fig"], 2, seed=9)
    added = runner.invoke(app, ["index", str(run), "--add", str(extra), "--json", *fast])
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["n_items"] == 20 and json.loads(added.stdout)["n_trees"] == 3
    assert json.loads(added.stdout)["added"] is True


def test_cli_add_counts_only_its_own_unreadable_images(tmp_path, run_dir, gallery_dir):
    run, gallery = tmp_path / "run", tmp_path / "gallery"
    shutil.copytree(run_dir, run)
    shutil.copytree(gallery_dir, gallery)
    (gallery / "apple" / "broken.png").write_bytes(b"not an image")
    runner = CliRunner()
    fast = ["--device", "cpu", "--workers", "0", "--quiet", "--json"]
    built = runner.invoke(app, ["index", str(run), str(gallery), "--n-trees", "3", *fast])
    assert built.exit_code == 0 and json.loads(built.stdout)["n_skipped"] == 1, built.output
    extra = write_images(tmp_path / "extra", ["fig"], 2, seed=9)
    added = runner.invoke(app, ["index", str(run), "--add", str(extra), *fast])
    assert added.exit_code == 0 and json.loads(added.stdout)["n_skipped"] == 0, "the first build's broken file is not this call's"
    (extra / "fig" / "empty.png").write_bytes(b"")
    again = runner.invoke(app, ["index", str(run), "--add", str(extra), *fast])  # nothing new, one unreadable file warned of
    summary = json.loads(again.stdout)
    assert again.exit_code == 0 and summary["added"] is False and summary["n_skipped"] == 1, again.output  # it said 0


def test_cli_errors_are_retrieval_errors_with_one_line(tmp_path, run_dir, gallery_dir):
    runner = CliRunner()
    missing = runner.invoke(app, ["search", str(run_dir), str(gallery_dir / "apple" / "0_0.png")])
    assert isinstance(missing.exception, RetrievalError)
    assert "retrieval index" in str(missing.exception) and "\n" not in str(missing.exception)
    both = runner.invoke(app, ["index", str(run_dir), str(gallery_dir), "--add", str(gallery_dir)])
    assert isinstance(both.exception, RetrievalError)
    not_image = tmp_path / "query.png"
    not_image.write_bytes(b"\x00" * 10)
    bad = runner.invoke(app, ["search", str(run_dir), str(not_image)])
    assert isinstance(bad.exception, RetrievalError) and "query.png" in str(bad.exception)


def test_cli_help_states_the_default_number_of_trees():
    result = CliRunner().invoke(app, ["index", "--help"])
    assert f"default {DEFAULT_N_TREES}" in result.stdout


def test_cli_add_of_a_flat_folder_to_a_labelled_index_warns_that_it_is_no_longer_labelled(tmp_path, run_dir, gallery_dir, cli):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    fast = ["--device", "cpu", "--workers", "0", "--quiet"]
    assert cli("index", run, gallery_dir, "--n-trees", "3", *fast).code == 0
    labelled_extra = write_images(tmp_path / "extra", ["fig"], 2, seed=9)
    quiet = cli("index", run, "--add", labelled_extra, *fast)
    assert quiet.code == 0 and not any("flat folder" in line for line in quiet.lines), quiet.err
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, image in enumerate(sorted(labelled_extra.rglob("*.png"))):
        shutil.copy(image, flat / f"loose_{k}.png")
    added = cli("index", run, "--add", flat, "--json", *fast)
    assert added.code == 0, added.err
    assert json.loads(added.out)["labelled"] is False
    warned = [line for line in added.lines if "flat folder" in line]
    assert len(warned) == 1 and str(flat) in warned[0] and "no longer count as labelled" in warned[0], added.err


def test_cli_remove_label_in_another_case_names_the_label_meant(tmp_path, run_dir, gallery_dir, cli):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert cli("index", run, gallery_dir, "--n-trees", "2", "--device", "cpu", "--workers", "0", "--quiet").code == 0
    wrong = cli("index", run, "--remove-label", "Apple", "--remove-label", "plumm")
    assert wrong.code == 2 and wrong.lines[-1].endswith("nothing removed (did you mean apple, plum?)"), wrong.err
    assert cli("index", run, "--remove-label", "banana").lines[-1].endswith("given (banana); nothing removed")
    missing = cli("index", run, "--remove", "apple/nope.png")
    assert missing.code == 2 and missing.lines[-1].endswith("given (apple/nope.png); nothing removed"), missing.err  # names what it looked for


def test_cli_remove_takes_a_path_as_search_shows_it_relative_to_the_gallery_folder(tmp_path, run_dir, gallery_dir, cli, monkeypatch):
    """`search` shows neighbours relative to the gallery folder ("apple/0.png"): `--remove` takes that
    form too when it names nothing from the current folder; a name inside two gallery folders is refused."""
    from retrieval.index import GalleryIndex

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert cli("index", run, gallery_dir, "--n-trees", "2", "--device", "cpu", "--workers", "0", "--quiet").code == 0
    index = GalleryIndex.load(run, load_model=False)
    shown, n = index.relative_paths[0], len(index)
    index.close()
    monkeypatch.chdir(tmp_path)  # the path does not exist from here
    assert not (tmp_path / shown).exists()
    removed = cli("index", run, "--remove", shown, "--json")
    assert removed.code == 0, removed.err
    assert json.loads(removed.out)["removed"] == 1 and json.loads(removed.out)["n_items"] == n - 1
    other = tmp_path / "other"
    shutil.copytree(gallery_dir, other)
    assert cli("index", run, "--add", other, "--device", "cpu", "--workers", "0", "--quiet").code == 0
    index = GalleryIndex.load(run, load_model=False)
    twice = index.relative_paths[1]
    index.close()
    ambiguous = cli("index", run, "--remove", twice)
    assert ambiguous.code == 2 and len(ambiguous.lines) == 1 and "more than one gallery folder" in ambiguous.lines[0], ambiguous.err


def test_cli_remove_with_gallery_root_takes_the_moved_gallerys_paths_and_records_the_new_root(tmp_path, run_dir, gallery_dir, cli):
    from retrieval.index import GalleryIndex, read_index_metadata

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    gallery = tmp_path / "gallery"
    shutil.copytree(gallery_dir, gallery)
    assert cli("index", run, gallery, "--n-trees", "2", "--device", "cpu", "--workers", "0", "--quiet").code == 0
    moved = tmp_path / "moved"
    gallery.rename(moved)
    index = GalleryIndex.load(run, load_model=False, gallery_roots=[moved])
    first, n = index.relative_paths[0], len(index)
    index.close()
    removed = cli("index", run, "--remove", moved / first, "--gallery-root", moved, "--json")
    assert removed.code == 0, removed.err
    assert json.loads(removed.out)["n_items"] == n - 1
    assert read_index_metadata(run)["roots"] == [str(moved.resolve())]


def test_an_index_of_two_folders_prints_paths_relative_to_the_folder_holding_both_and_removes_by_them(tmp_path, run_dir, gallery_dir, cli):
    """``index --add OTHER``: the search table printed every path whole (absolute, folded over four
    lines at 80 columns); it now prints them from the folder that holds both gallery folders, names
    that folder, and ``--remove`` takes a path as printed."""
    run, photos = tmp_path / "run", tmp_path / "photos"
    shutil.copytree(run_dir, run)
    shutil.copytree(gallery_dir, photos / "shop")
    extra = write_images(photos / "catalogue", ["fig"], 2, seed=9)
    fast = ["--device", "cpu", "--workers", "0", "--quiet"]
    assert cli("index", run, photos / "shop", "--n-trees", "3", *fast).code == 0
    assert cli("index", run, "--add", extra, *fast).code == 0
    table = cli("search", run, extra / "fig" / "0_0.png", "-k", "3", "--exact")
    assert table.code == 0, table.err
    rows, caption = table.out.split("┩")[1].split("└")  # the table's rows, then its caption and the verdict
    assert "catalogue/fig/0_0.png" in "".join(rows.replace("│", "").split()) and str(tmp_path) not in rows
    assert f"pathsrelativeto{photos}" in "".join(caption.split())  # rich folds a long caption anywhere
    removed = cli("index", run, "--remove", "catalogue/fig/0_0.png", "--json")  # as printed, not from the current folder
    assert removed.code == 0 and json.loads(removed.out)["removed"] == 1, removed.err


def test_cli_remove_with_one_unknown_label_or_path_among_known_ones_removes_nothing(tmp_path, run_dir, gallery_dir, cli):
    """`--remove-label apple --remove-label TYPO` removed apple and ignored TYPO: a typo among the
    names is refused in one line naming it (with the label it may mean), and nothing is removed."""
    from index_helpers import index_files

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert cli("index", run, gallery_dir, "--n-trees", "2", "--device", "cpu", "--workers", "0", "--quiet").code == 0
    before = index_files(run)
    typo = cli("index", run, "--remove-label", "apple", "--remove-label", "peer")
    assert typo.code == 2 and len(typo.lines) == 1, typo.err
    assert typo.lines[0].endswith("given (peer); nothing removed (did you mean pear?)"), typo.err
    path = cli("index", run, "--remove", gallery_dir / "apple" / "0_0.png", "--remove", gallery_dir / "apple" / "nope.png")
    assert path.code == 2 and len(path.lines) == 1 and f"({gallery_dir / 'apple' / 'nope.png'})" in path.lines[0], path.err
    assert index_files(run) == before
    both = cli("index", run, "--remove-label", "apple", "--remove", gallery_dir / "pear" / "1_0.png", "--json")
    assert both.code == 0 and json.loads(both.out)["removed"] == 7, both.err


def test_cli_add_says_how_many_images_it_found_indexed_already(tmp_path, run_dir, gallery_dir, cli):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    fast = ["--device", "cpu", "--workers", "0", "--quiet"]
    assert cli("index", run, gallery_dir / "apple", "--n-trees", "2", *fast).code == 0
    added = cli("index", run, "--add", gallery_dir, *fast)
    assert added.code == 0, added.err
    assert f"(6 image(s) of {gallery_dir} already indexed, not added again)" in added.out and "indexed 18 image(s)" in added.out
    again = cli("index", run, "--add", gallery_dir / "pear", "--json", *fast)
    assert json.loads(again.out)["added"] is False and json.loads(again.out)["n_already_indexed"] == 6
