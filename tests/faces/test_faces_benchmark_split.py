"""The validation folds of ``benchmarks/face_runs.py``: fold k holds out s(10k+1)-s(10k+10) of the
training people and trains on the other twenty; nobody is on both sides (a person in both would
make the fold's figures meaningless). The photo-making step is replaced by one that writes empty
scene files, so the test needs neither the data sets nor a detector."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def face_runs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import face_runs
    import face_scenes

    people = tmp_path / "att_train"
    for n in range(1, 31):
        for image in range(1, 11):
            (people / f"s{n}").mkdir(parents=True, exist_ok=True)
            (people / f"s{n}" / f"{image}.png").write_bytes(b"")

    def fake_scenes(out: Path, seed: int) -> dict:
        for n in range(1, 31):
            (out / "single" / f"s{n}").mkdir(parents=True)
            for image in range(1, 11):
                (out / "single" / f"s{n}" / f"{image}.jpg").write_bytes(b"")
        return {}

    monkeypatch.setattr(face_runs, "TRAIN", people)
    monkeypatch.setattr(face_scenes, "make_scenes", fake_scenes)
    yield face_runs
    sys.modules.pop("face_runs", None)


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_a_validation_fold_holds_out_its_ten_people_and_trains_on_the_other_twenty(face_runs, tmp_path, fold):
    train_dir, folders = face_runs.validation_folders(tmp_path / f"fold{fold}", fold)
    held = {f"s{n}" for n in range(10 * fold + 1, 10 * fold + 11)}
    trained = {p.name for p in train_dir.iterdir()}
    assert trained == {f"s{n}" for n in range(1, 31)} - held
    for (kind, role), folder in folders.items():
        assert {p.name for p in folder.iterdir()} == held, (kind, role)
        numbers = {int(f.stem) for f in folder.glob("*/*")}
        assert numbers == (set(range(1, 6)) if role == "query" else set(range(6, 11)))
    assert all(len(list((train_dir / person).iterdir())) == 10 for person in trained)


def test_the_default_fold_is_the_split_every_earlier_choice_was_made_on(face_runs, tmp_path):
    train_dir, _ = face_runs.validation_folders(tmp_path / "default")
    assert {p.name for p in train_dir.iterdir()} == {f"s{n}" for n in range(1, 21)}


def test_fold_without_validation_is_refused_in_one_line(face_runs, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["face_runs.py", "--fold", "0"])
    with pytest.raises(SystemExit) as stop:
        face_runs.main()
    assert stop.value.code == 2
    assert "--fold needs --validation" in capsys.readouterr().err
