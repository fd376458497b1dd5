"""retrieval.confusions: the class confusions of training counted by hand and against a loop over
anchors, the gallery's confusions against brute-force search, and `retrieval confusions`."""

import json
import math
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import fake_runs
from conftest import brute_is_negative
from retrieval.cli import app
from retrieval.confusions import ConfusionCounts, gallery_confusions, nearest_items, run_confusions
from retrieval.errors import RetrievalError
from retrieval.mining import TripletMiner
from retrieval.negatives import NegativeRules
from retrieval.tables import nearest_other_table

CLASSES = ["apple", "banana", "cherry"]


def on_circle(*degrees):
    return torch.tensor([[math.cos(math.radians(t)), math.sin(math.radians(t))] for t in degrees], dtype=torch.float64)


def view_of(degrees, labels, rules=None):
    return TripletMiner("semihard", 0.2, negative_rules=rules)(on_circle(*degrees), torch.tensor(labels)).record.anchors


def by_pair(rows):
    return {(r["anchor_label"], r["negative_label"]): (r["nearest"], r["met"], r["batches"], r["anchors"]) for r in rows}


def test_confusions_of_two_hand_made_batches_are_counted_as_by_hand():
    counts = ConfusionCounts()
    # batch 1: apple at 0° and 45°, banana at 20° and 180°, cherry at 100°. Nearest negatives:
    # apple 0° -> banana 20°, apple 45° -> banana 20°, banana 20° -> apple 0°, banana 180° -> cherry 100°,
    # cherry 100° -> apple 45°
    counts.add(view_of((0, 45, 20, 180, 100), [0, 0, 1, 1, 2]))
    # batch 2: apple at 0° and 90°, banana at 10° and 200°: each apple's nearest is banana 10°, each banana's an apple
    counts.add(view_of((0, 90, 10, 200), [0, 0, 1, 1]))
    rows = counts.rows(4, CLASSES)
    assert by_pair(rows) == {
        ("apple", "banana"): (4, 4, 2, 4),   # nearest, anchors of apple that met banana, batches shared, apple anchors
        ("banana", "apple"): (3, 4, 2, 4),
        ("banana", "cherry"): (1, 2, 1, 4),
        ("cherry", "apple"): (1, 1, 1, 1),
    }  # apple -> cherry and cherry -> banana met but were never nearest: no row
    assert [r["nearest"] for r in rows] == [4, 3, 1, 1] and {r["epoch"] for r in rows} == {4}
    for anchor_class in CLASSES:  # every anchor with a negative has exactly one nearest negative
        mine = [r for r in rows if r["anchor_label"] == anchor_class]
        assert sum(r["nearest"] for r in mine) == (mine[0]["anchors"] if mine else 0)


def test_confusions_match_a_loop_over_anchors_with_negative_rules_and_consolidation(monkeypatch):
    import retrieval.confusions as module

    monkeypatch.setattr(module, "_CONSOLIDATE_ROWS", 10)  # sum the pending pairs after almost every batch
    rules = NegativeRules(never_negative=[(0, 1)], class_groups=[0, 0, 1, 1, 0], negatives="prefer-same-group")
    counts, expected = ConfusionCounts(), {}
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        labels = torch.randint(0, 5, (14,), generator=generator)
        x = torch.randn(14, 5, generator=generator, dtype=torch.float64)
        counts.add(TripletMiner("all", 0.2, negative_rules=rules)(x, labels).record.anchors)
        d = torch.cdist(torch.nn.functional.normalize(x), torch.nn.functional.normalize(x))
        is_neg = brute_is_negative(labels, rules)
        y = labels.tolist()
        for a_class in set(y):
            for b_class in set(y) - {a_class}:
                entry = expected.setdefault((a_class, b_class), [0, 0, 0])
                entry[2] += 1
        for a in range(14):
            negatives = [n for n in range(14) if is_neg(a, n)]
            for b_class in {y[n] for n in negatives}:
                expected[(y[a], b_class)][1] += 1
            if negatives:
                expected[(y[a], y[min(negatives, key=lambda n: float(d[a, n]))])][0] += 1
    names = [f"c{i}" for i in range(5)]
    got = {pair: values[:3] for pair, values in by_pair(counts.rows(1, names)).items()}
    assert got == {(names[a], names[b]): tuple(v) for (a, b), v in expected.items() if v[0] > 0}


def brute_nearest(x, labels):
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.sqrt(np.maximum(0.0, 2 - 2 * unit @ unit.T))
    out = []
    for i in range(len(x)):
        others = [j for j in range(len(x)) if j != i]
        nearest = min(others, key=lambda j: d[i, j])
        negative = min((j for j in others if labels[j] != labels[i]), key=lambda j: d[i, j])
        same = [j for j in others if labels[j] == labels[i]]
        positive = min(same, key=lambda j: d[i, j]) if same else -1
        out.append((nearest, negative, positive, d[i, negative], d[i, positive] if same else math.nan))
    return out


def test_nearest_items_match_brute_force_in_chunks():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(37, 6)).astype(np.float32)
    labels = [f"class{i}" for i in rng.integers(0, 5, 37)]
    labels[0] = "alone"  # a class of one item: no positive
    found = nearest_items(x, labels, chunk_elements=37 * 4)  # four query rows a chunk
    for i, (nearest, negative, positive, d_an, d_ap) in enumerate(brute_nearest(x, labels)):
        assert (found.nearest[i], found.negative[i], found.positive[i]) == (nearest, negative, positive)
        assert found.negative_distance[i] == pytest.approx(d_an, abs=1e-5)
        assert (math.isnan(found.positive_distance[i]) and math.isnan(d_ap)) or found.positive_distance[i] == pytest.approx(d_ap, abs=1e-5)


def test_gallery_confusions_count_rank_1_confusions_and_nearest_negatives_per_pair_and_class():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    labels = [CLASSES[i % 3] for i in range(30)]
    paths = [f"{label}/{i}.png" for i, label in enumerate(labels)]
    result = gallery_confusions(x, labels, paths, per_class=2, top_pairs=10)
    brute = brute_nearest(x, labels)
    assert (result["n_items"], result["n_classes"]) == (30, 3)
    for pair in result["pairs"]:
        a, b = pair["classes"]
        links = [i for i, row in enumerate(brute) if {labels[i], labels[row[1]]} == {a, b}]
        assert pair["nearest_negative"] == len(links)
        assert pair["confused"] == sum(1 for i in links if labels[brute[i][0]] != labels[i])
        assert pair["closest"]["distance"] == pytest.approx(min(brute[i][3] for i in links), abs=1e-5)
    ranks = [(-p["confused"], -p["nearest_negative"], p["closest"]["distance"]) for p in result["pairs"]]
    assert ranks == sorted(ranks) and len(result["pairs"]) == 3
    for entry in result["classes"]:
        mine = sorted((brute[i][3], paths[i], paths[brute[i][1]]) for i in range(30) if labels[i] == entry["class"])
        assert [(link["item"], link["other"]) for link in entry["nearest_other"]] == [(p, o) for _, p, o in mine[:2]]
        assert entry["confused"] == sum(1 for i in range(30) if labels[i] == entry["class"] and labels[brute[i][0]] != labels[i])
    assert json.loads(json.dumps(result)) == result


def test_an_item_alone_in_its_class_is_no_rank_1_confusion_but_keeps_its_nearest_negative():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    labels = ["a", "a", "a", "b", "b", "b", "single"]  # "single": one item, so its nearest is always of another class
    result = gallery_confusions(x, labels, [f"{i}.png" for i in range(7)])
    single = next(entry for entry in result["classes"] if entry["class"] == "single")
    assert (single["n_items"], single["n_with_positive"], single["confused"]) == (1, 0, 0)
    assert len(single["nearest_other"]) == 1
    brute = brute_nearest(x, labels)
    for pair in result["pairs"]:
        links = [i for i, row in enumerate(brute) if {labels[i], labels[row[1]]} == set(pair["classes"])]
        assert pair["confused"] == sum(1 for i in links if labels[i] != "single" and labels[brute[i][0]] != labels[i])
    table = nearest_other_table(result["classes"], title="t", width=100)
    assert list(table.columns[1].cells)[-1] == "-"


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    gallery = fake_runs.make_gallery(tmp_path_factory.mktemp("gallery"))
    return fake_runs.make_run(tmp_path_factory.mktemp("runs") / "run", gallery), gallery


def test_run_confusions_over_the_index_equal_those_of_embedding_the_folder(fake_run):
    run, gallery = fake_run
    from_index = run_confusions(run, per_class=1, top_pairs=3)
    from_folder = run_confusions(run, gallery, per_class=1, top_pairs=3, device="cpu", num_workers=0, precision="fp32")
    assert from_index["source"] == "index" and from_folder["source"] == str(gallery)
    assert [p["classes"] for p in from_index["pairs"]] == [p["classes"] for p in from_folder["pairs"]]
    assert [c["nearest_other"][0]["item"] for c in from_index["classes"]] == [c["nearest_other"][0]["item"] for c in from_folder["classes"]]


def test_confusions_without_labels_or_with_one_class_are_one_line_errors(fake_run, tmp_path):
    run, gallery = fake_run
    one_class = tmp_path / "one"
    fake_runs.make_gallery(one_class, classes=("apple",))
    with pytest.raises(RetrievalError, match="two or more classes"):
        run_confusions(run, one_class, device="cpu", num_workers=0)
    bare = fake_runs.make_run(tmp_path / "bare", gallery, index=False, mining=False)
    out = CliRunner().invoke(app, ["confusions", str(bare)])
    assert out.exit_code != 0 and "no gallery index" in str(out.exception)


def test_confusions_cli_prints_json_and_tables_readable_at_100_columns(fake_run):
    run, _ = fake_run
    out = CliRunner().invoke(app, ["confusions", str(run), "--json", "--top", "2", "--per-class", "1"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["source"] == "index" and len(result["pairs"]) == 2
    assert all(len(c["nearest_other"]) == 1 for c in result["classes"])
    out = CliRunner().invoke(app, ["confusions", str(run)], env={"COLUMNS": "100"})
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 100
    assert sum(1 for line in lines if line.lstrip().startswith(("apple ", "banana ", "cherry ", "damson "))) >= 4


@pytest.mark.parametrize("width", [60, 80, 100])
def test_tables_cut_long_names_but_never_a_number_or_its_header(width):
    from rich.console import Console

    from retrieval.tables import confused_pairs_table, mining_table, nearest_other_table

    long_a, long_b = "Arla-Sour-Cream-with-a-long-name", "Oatly-Natural-Oatghurt-also-long"
    triplet = {"anchor_label": long_a, "anchor_path": f"{long_a}/{long_a}_0001.jpg", "positive_path": f"{long_a}/p_0002.jpg",
               "negative_label": long_b, "negative_path": f"{long_b}/{long_b}_0003.jpg", "d_ap": 0.1234, "d_an": 0.2345,
               "d_an_minus_d_ap": -0.111, "mined": True}
    pair = {"classes": [long_a, long_b], "confused": 3, "nearest_negative": 12,
            "closest": {"item": f"{long_a}/{long_a}_0001.jpg", "other": f"{long_b}/x.jpg", "label": long_a, "distance": 0.1223}}
    entry = {"class": long_a, "confused": 3, "n_items": 40, "nearest_other": [
        {"item": f"{long_a}/a.jpg", "other": f"{long_b}/b.jpg", "other_label": long_b, "distance": 0.1223, "positive_distance": 0.2}]}
    tables = [(mining_table([triplet], title="", margin=0.2, width=width), ["d_ap", "d_an", "d_an−d_ap", "0.123", "0.234", "-0.111"]),
              (confused_pairs_table([pair], title="", width=width), ["rank-1", "nearest neg.", "0.122"]),
              (nearest_other_table([entry], title="", width=width), ["rank-1", "d_an", "d_ap", "3/40", "0.122", "0.200"])]
    for table, whole in tables:
        console = Console(width=width, record=True, file=open(os.devnull, "w"))
        console.print(table)
        text = console.export_text()
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width
        for word in whole:
            assert word in text, (word, text)
        assert "…" in text  # the long names are what gets cut
