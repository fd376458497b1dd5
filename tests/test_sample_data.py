"""retrieval.sample_data: the generated product data set and `retrieval sample-data`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from retrieval import sample_data
from retrieval.cli import app
from retrieval.errors import RetrievalError
from retrieval.sample_data import MANIFEST_NAME, generate, generate_sample_data, product_specs, split_specs

# Small on purpose: 4 + 2 classes x 3 photos at 32 px is well under a second.
SMALL = dict(n_train_classes=4, n_test_classes=2, images_per_class=3, image_size=32)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _classes(root: Path, split: str) -> list[str]:
    return sorted(p.name for p in (root / split).iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample") / "products"
    return out, generate_sample_data(out, seed=0, **SMALL)


def test_same_seed_gives_byte_identical_files(small, tmp_path):
    first, _ = small
    second = tmp_path / "again"
    generate_sample_data(second, seed=0, **SMALL)
    assert _files(first) == _files(second)


def test_different_seed_gives_different_photos_but_the_same_catalogue(small, tmp_path):
    first, _ = small
    other = tmp_path / "other"
    generate_sample_data(other, seed=1, **SMALL)
    a, b = _files(first), _files(other)
    assert a.keys() == b.keys()
    photos = [name for name in a if name.startswith(("train/", "test/"))]
    assert all(a[name] != b[name] for name in photos)
    catalogue = [name for name in a if name.startswith("catalog/")]
    assert all(a[name] == b[name] for name in catalogue)


def test_layout_has_disjoint_train_and_test_classes_and_one_catalogue_image_for_every_class(small):
    out, summary = small
    train, test = _classes(out, "train"), _classes(out, "test")
    assert len(train) == SMALL["n_train_classes"] and len(test) == SMALL["n_test_classes"]
    assert not set(train) & set(test)
    assert _classes(out, "catalog") == sorted(train + test)
    for name in train + test:
        assert [p.name for p in (out / "catalog" / name).iterdir()] == [f"{name}-catalog.png"]
    assert summary["n_catalog_images"] == len(train) + len(test)


def test_every_class_has_images_per_class_photos_of_the_requested_size(small):
    out, summary = small
    for split in ("train", "test"):
        for name in _classes(out, split):
            photos = sorted((out / split / name).iterdir())
            assert len(photos) == SMALL["images_per_class"]
            for photo in photos:
                with Image.open(photo) as image:
                    assert image.size == (32, 32) and image.mode == "RGB"
    assert summary["n_train_images"] == SMALL["n_train_classes"] * SMALL["images_per_class"]
    assert summary["n_test_images"] == SMALL["n_test_classes"] * SMALL["images_per_class"]
    assert summary["skipped"] is False and summary["seconds"] > 0


def test_photos_of_a_class_differ_from_each_other_and_from_its_catalogue_image(small):
    out, _ = small
    name = _classes(out, "train")[0]
    photos = [p.read_bytes() for p in sorted((out / "train" / name).iterdir())]
    catalogue = (out / "catalog" / name / f"{name}-catalog.png").read_bytes()
    assert len(set(photos + [catalogue])) == len(photos) + 1


def test_a_second_run_with_the_same_seed_and_sizes_skips_and_leaves_files_untouched(small):
    out, _ = small
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    summary = generate_sample_data(out, seed=0, **SMALL)
    assert summary["skipped"] is True
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_previous_output_is_regenerated_when_the_seed_changes_a_file_is_missing_or_force(tmp_path):
    out = tmp_path / "products"
    generate_sample_data(out, seed=0, **SMALL)
    assert generate_sample_data(out, seed=3, **SMALL)["skipped"] is False
    assert json.loads((out / MANIFEST_NAME).read_text())["seed"] == 3
    victim = next((out / "test").rglob("*.png"))
    victim.unlink()
    assert generate_sample_data(out, seed=3, **SMALL)["skipped"] is False
    assert victim.exists()
    assert generate_sample_data(out, seed=3, force=True, **SMALL)["skipped"] is False
    assert not list(tmp_path.glob(".products.*")), "no temporary folder is left behind"


def test_refuses_to_overwrite_an_unrelated_non_empty_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(RetrievalError, match="not empty"):
        generate_sample_data(out, **SMALL)
    assert (out / "holiday.jpg").read_bytes() == b"not ours"


def test_refuses_to_replace_sample_data_that_holds_a_users_own_file(tmp_path):
    out = tmp_path / "products"
    generate_sample_data(out, **SMALL)
    extra = out / "train" / "my-notes.txt"
    extra.write_text("keep me")
    with pytest.raises(RetrievalError, match="my-notes.txt"):
        generate_sample_data(out, seed=5, **SMALL)
    assert extra.read_text() == "keep me"


def test_an_empty_existing_folder_is_filled(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert generate_sample_data(out, **SMALL)["skipped"] is False
    assert (out / MANIFEST_NAME).is_file()


def test_an_interrupted_run_leaves_the_previous_output_intact_and_no_partial_folder(tmp_path, monkeypatch):
    out = tmp_path / "products"
    generate_sample_data(out, seed=0, **SMALL)
    before = _files(out)
    calls = {"n": 0}
    real = generate.render_photo

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "render_photo", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_sample_data(out, seed=1, **SMALL)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["products"]


@pytest.mark.parametrize(
    "bad",
    [
        dict(n_train_classes=0),
        dict(n_test_classes=0),
        dict(images_per_class=1),
        dict(image_size=8),
        dict(n_train_classes=sample_data.MAX_CLASSES),
    ],
)
def test_bad_sizes_are_refused_with_a_retrieval_error(tmp_path, bad):
    with pytest.raises(RetrievalError):
        generate_sample_data(tmp_path / "out", **{**SMALL, **bad})
    assert not (tmp_path / "out").exists()


def test_default_classes_are_confusable_groups_with_unique_readable_names():
    train, test = split_specs(24, 12)
    names = [s.name for s in train + test]
    assert len(set(names)) == 36
    assert all(name == f"{s.shape}-{s.colour}-{s.logo}" for name, s in zip(names, train + test))
    for split in (train, test):
        pairs = [(a, b) for a in split for b in split if a.name < b.name]
        assert any(a.shape == b.shape and a.colour == b.colour for a, b in pairs), "logo-only difference"
        assert any(a.shape == b.shape and a.logo == b.logo for a, b in pairs), "colour-only difference"
        assert any(a.colour == b.colour and a.logo == b.logo for a, b in pairs), "shape-only difference"
    assert len({s.name for s in product_specs(sample_data.MAX_CLASSES)}) == sample_data.MAX_CLASSES


def test_cli_sample_data_generates_then_skips_and_prints_what_to_run_next(tmp_path):
    out = tmp_path / "products"
    sizes = ["--train-classes", "3", "--test-classes", "2", "--images-per-class", "2", "--image-size", "32"]
    runner = CliRunner()
    result = runner.invoke(app, ["sample-data", str(out), "--seed", "7", *sizes])
    assert result.exit_code == 0, result.output
    assert "6 train photos (3 classes)" in result.output
    assert f"retrieval train {out / 'train'} --out models/demo --backbone resnet10t --image-size 32 --epochs 40" in result.output
    assert len(_classes(out, "train")) == 3 and len(_classes(out, "catalog")) == 5

    again = runner.invoke(app, ["sample-data", str(out), "--seed", "7", "--json", *sizes])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.output)
    assert summary["skipped"] is True and summary["seed"] == 7 and summary["n_test_images"] == 4

    forced = runner.invoke(app, ["sample-data", str(out), "--seed", "7", "--force", "--json", *sizes])
    assert json.loads(forced.output)["skipped"] is False


def test_cli_sample_data_refuses_an_unrelated_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["sample-data", str(tmp_path), "--train-classes", "2", "--test-classes", "1"])
    assert result.exit_code != 0
    assert isinstance(result.exception, RetrievalError)
