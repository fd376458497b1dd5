"""Tests of retrieval.data.side_files: class-group and never-negative CSV files.

The only real data used is grocery's classes.csv (skipped, with the reason, when ../shared/datasets
is absent).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from data_helpers import warning_messages
from retrieval import data
from retrieval.data import read_class_groups, read_class_pairs
from retrieval.errors import RetrievalError

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def test_read_class_groups_reads_the_grocery_classes_csv_fine_to_coarse(caplog):
    csv_path = DATASETS / "grocery" / "classes.csv"
    if not csv_path.is_file():
        pytest.skip(f"real data set not present: {csv_path} (../shared/datasets beside the checkout)")
    train_classes = sorted(p.name for p in (DATASETS / "grocery" / "train").iterdir() if p.is_dir())
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        groups = read_class_groups(csv_path, train_classes)
    assert set(groups) == set(train_classes)
    assert groups["Golden-Delicious"] == groups["Pink-Lady"] == groups["Royal-Gala"] == "Apple"
    assert [m for m in warning_messages(caplog) if "not in the data" in m]  # the test split's classes
    ids = data.class_group_ids(train_classes, groups)
    apple = {ids[train_classes.index(name)] for name in ("Golden-Delicious", "Pink-Lady", "Royal-Gala")}
    assert len(apple) == 1 and len(set(ids)) == len(set(groups.values()))


def test_read_class_groups_accepts_class_group_header_and_headerless_pairs(tmp_path, caplog):
    path = tmp_path / "groups.csv"
    path.write_text("# fine to coarse\nClass,Group\n\napple_red,apple\napple_green,apple\npear,pear\nplum,stone\n")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        groups = read_class_groups(path, ["apple_green", "apple_red", "pear", "kiwi"])
    assert groups == {"apple_green": "apple", "apple_red": "apple", "pear": "pear"}
    messages = warning_messages(caplog)
    assert any("plum" in m and "not in the data" in m for m in messages)
    assert any("kiwi" in m and "no group" in m for m in messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval"):  # plum held out for validation: in the data, no warning
        assert "plum" not in read_class_groups(path, ["apple_green", "apple_red", "pear"], held_out=["plum"])
    assert not [m for m in warning_messages(caplog) if "not in the data" in m]
    pairs = tmp_path / "never.csv"
    pairs.write_text("apple_red,plum\napple_red,pear\napple_red,fig\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        assert data.read_class_pairs(pairs, ["apple_red", "pear"], held_out=["plum"]) == [("apple_red", "pear")]
    (warned,) = [m for m in warning_messages(caplog) if "not in the data" in m]
    assert "1 classes" in warned and "fig" in warned and "plum" not in warned
    path.write_text("apple_red,apple\npear,pear\n")
    assert read_class_groups(path, ["apple_red", "pear"]) == {"apple_red": "apple", "pear": "pear"}
    assert data.class_group_ids(["apple_red", "pear", "kiwi"], {"apple_red": "apple", "pear": "pear"}) == [0, 1, 2]


@pytest.mark.parametrize(
    "text, message",
    [
        ("class,group\na,x\nb,y,extra\n", "groups.csv:3: expected 2 fields"),
        ("class,group\na,x\n\nb,\n", "groups.csv:4: empty class or group"),
        ("class,group\na,x\nb,y\na,z\n", "groups.csv:4: class a is in group z here but in x on line 2"),
        ("fine,colour\na,x\n", "groups.csv:1: header must name"),
        ("", "groups.csv: empty file"),
    ],
)
def test_read_class_groups_names_file_and_line_of_malformed_rows(tmp_path, text, message):
    path = tmp_path / "groups.csv"
    path.write_text(text)
    with pytest.raises(RetrievalError) as error:
        read_class_groups(path, ["a", "b"])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_read_class_pairs_reads_deduplicated_pairs_and_warns_about_unknown_classes(tmp_path, caplog):
    path = tmp_path / "pairs.csv"
    path.write_text("class_a,class_b\nalice,alice_2\nalice_2,alice\nbob,ghost\n# a comment\nbob,carol\n")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        pairs = read_class_pairs(path, ["alice", "alice_2", "bob", "carol"])
    assert pairs == [("alice", "alice_2"), ("bob", "carol")]
    assert any("ghost" in m for m in warning_messages(caplog))
    path.write_text("alice,alice_2\n")
    assert read_class_pairs(path, ["alice", "alice_2"]) == [("alice", "alice_2")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("class_a,class_b\nalice,bob,carol\n", "pairs.csv:2: expected class_a,class_b"),
        ("alice,bob\nbob,bob\n", "pairs.csv:2: a class cannot be its own"),
        ("alice,\n", "pairs.csv:1: empty class name"),
    ],
)
def test_read_class_pairs_names_file_and_line_of_malformed_rows(tmp_path, text, message):
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    with pytest.raises(RetrievalError, match=message):
        read_class_pairs(path, ["alice", "bob", "carol"])
    with pytest.raises(RetrievalError, match="not found"):
        read_class_pairs(tmp_path / "missing.csv", [])


def test_a_side_file_that_is_a_folder_or_not_utf8_is_named_with_its_line(tmp_path):
    with pytest.raises(RetrievalError, match="is a folder, not a"):
        read_class_groups(tmp_path, ["a"])
    latin = tmp_path / "groups.csv"
    latin.write_bytes("class,group\na,fruit\nb,l\xe9gume\n".encode("latin-1"))
    with pytest.raises(RetrievalError, match=r"groups\.csv:3: not UTF-8 text .*save the file as UTF-8"):
        read_class_groups(latin, ["a", "b"])
    bom = tmp_path / "bom.csv"
    bom.write_bytes("class,group\na,fruit\n".encode("utf-8-sig"))
    assert read_class_groups(bom, ["a"]) == {"a": "fruit"}


def test_a_comment_is_a_line_beginning_with_a_hash_as_written_and_a_quoted_hash_is_a_value(tmp_path):
    from retrieval.data.side_files import read_csv_rows

    path = tmp_path / "pairs.csv"
    path.write_text('# a comment\n  # another\n"#tag.png",b.png\na.png,"x\ny.png"\nc.png,d.png\n')
    assert read_csv_rows(path) == [(3, ["#tag.png", "b.png"]), (4, ["a.png", "x\ny.png"]), (6, ["c.png", "d.png"])]
