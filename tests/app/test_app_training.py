"""The Training page (app_pages/training.py): curves per epoch, held-out distances, τ and the ROC / DET curve."""

import json

import pytest

import fake_runs
from retrieval.verification import threshold_at_far
from app_helpers import charts, full_run, gallery, go, start, texts  # noqa: F401


def test_training_page_shows_curves_and_held_out_distances(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Training")
    specs = charts(at)
    assert len(specs) == 2
    curves = next(s for s in specs if "facet" in s)
    assert {r["metric"] for r in curves["datasets"][curves["data"]["name"]]} >= {"training loss", "Recall@1 (held-out classes)"}
    assert any("negative pairs of held-out classes" in c for c in texts(at.caption))


def test_the_held_out_distances_say_they_are_the_served_weights_or_that_they_are_not(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Training")
    assert any(f"(epoch {fake_runs.BEST_EPOCH}, the weights served)" in c for c in texts(at.caption))
    # a run trained before val_distances.json followed the best weights holds its last epoch's
    val = json.loads((full_run / "val_distances.json").read_text())
    (full_run / "val_distances.json").write_text(json.dumps({**val, "epoch": 3}))
    at = go(start(monkeypatch, full_run), "Training")
    assert any("(epoch 3, the last; the weights served and their τ are epoch 2's" in c for c in texts(at.caption))


def test_the_tried_far_is_not_drawn_again_on_the_stored_point(monkeypatch, tmp_path, gallery):
    """The slider starts at the stored target FAR: where that gives the stored τ again, one point and
    one label, not two labels printed on top of each other."""
    run = fake_runs.make_run(tmp_path / "run", gallery, index=False, mining=False)
    val = json.loads((run / "val_distances.json").read_text())
    at_one_percent = threshold_at_far(val["positive"], val["negative"], 0.01).threshold  # what the slider gives
    config = json.loads((run / "config.json").read_text())
    config["verification"]["threshold"] = at_one_percent
    (run / "config.json").write_text(json.dumps(config))
    at = go(start(monkeypatch, run), "Training")
    _, _, marks = roc_panel(at)
    assert [m["name"] for m in marks] == ["stored τ (FAR 1 %)"]
    at.select_slider(key="try_far").set_value(0.1).run()
    _, _, marks = roc_panel(at)
    assert [m["name"] for m in marks] == ["stored τ (FAR 1 %)", "tried: FAR 10 %"]


def test_run_without_metrics_or_val_distances_says_so(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "untrained", gallery, index=False, mining=False, metrics=False, val_distances=False)
    at = go(start(monkeypatch, run), "Training")
    infos = texts(at.info)
    assert any("no metrics.jsonl" in m for m in infos) and any("no val_distances.json" in m for m in infos)


# ----------------------------------------------------------------------------- verification


def roc_panel(at):
    """The ROC / DET panel beside the histogram: (its spec, its curve rows, its marked points)."""
    (spec,) = [s for s in charts(at) if "hconcat" in s]
    roc = spec["hconcat"][1]
    rows = lambda i: spec["datasets"][roc["layer"][i]["data"]["name"]]  # noqa: E731
    return spec, rows(0), rows(1)


def test_histogram_gains_tau_and_the_roc_curve_with_the_stored_point(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Training")
    spec, curve, marks = roc_panel(at)
    histogram = spec["hconcat"][0]
    assert spec["datasets"][histogram["layer"][3]["data"]["name"]][0]["x"] == fake_runs.THRESHOLD
    val = json.loads((full_run / "val_distances.json").read_text())
    positive, negative = val["positive"], val["negative"]
    stored = next(m for m in marks if m["name"] == "stored τ (FAR 1 %)")
    assert curve[0]["threshold"] is None and curve[0]["tar"] == 0
    tau = fake_runs.THRESHOLD
    assert stored["far"] == pytest.approx(sum(d <= tau for d in negative) / len(negative))
    assert stored["tar"] == pytest.approx(sum(d <= tau for d in positive) / len(positive))
    for row in curve[1:]:  # each curve point: the rates at its threshold, by counting (the first lies below every distance)
        assert row["far"] == pytest.approx(sum(d <= row["threshold"] for d in negative) / len(negative))
        assert row["tar"] == pytest.approx(sum(d <= row["threshold"] for d in positive) / len(positive))
    curves = next(s for s in charts(at) if "facet" in s)
    assert "EER (held-out pairs)" in {r["metric"] for r in curves["datasets"][curves["data"]["name"]]}
    assert any("Stored threshold τ = 0.500" in c and "validation classes, epoch 2" in c for c in texts(at.caption))


def test_another_target_far_is_shown_and_never_written(monkeypatch, full_run):
    before = (full_run / "config.json").read_bytes()
    at = go(start(monkeypatch, full_run), "Training")
    at.select_slider(key="try_far").set_value(0.1).run()
    assert not at.exception
    _, _, marks = roc_panel(at)
    tried = next(m for m in marks if m["name"] == "tried: FAR 10 %")
    negative = json.loads((full_run / "val_distances.json").read_text())["negative"]
    far_at = lambda t: sum(d <= t for d in negative) / len(negative)  # noqa: E731
    next_up = min(d for d in negative if d > tried["threshold"])
    assert far_at(tried["threshold"]) <= 0.1 < far_at(next_up)  # the largest τ within the tried FAR
    assert any("Shown only" in c and "--target-far 0.1" in c for c in texts(at.caption))
    assert (full_run / "config.json").read_bytes() == before

    at.radio(key="roc_kind").set_value("DET").run()
    spec, _, _ = roc_panel(at)
    assert spec["hconcat"][1]["layer"][0]["encoding"]["y"]["field"] == "frr"
    assert spec["hconcat"][1]["layer"][0]["encoding"]["y"]["scale"]["type"] == "log"


def test_a_run_without_tau_says_how_to_set_one(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "no-tau", gallery, index=False, mining=False, threshold=None)
    at = go(start(monkeypatch, run), "Training")
    assert any("No threshold τ is set" in c and f"retrieval calibrate {run}" in c for c in texts(at.caption))
    _, _, marks = roc_panel(at)
    assert [m["name"] for m in marks] == ["tried: FAR 1 %"]


def test_a_threshold_on_too_few_pairs_for_its_far_says_so_on_every_page(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "run", gallery, mining=False)
    config = json.loads((run / "config.json").read_text())
    config["verification"]["n_negative_pairs"] = 100  # a FAR of 1 % needs 1000
    (run / "config.json").write_text(json.dumps(config))
    at = start(monkeypatch, run)
    at.file_uploader(key="upload").set_value(("q.png", fake_runs.png_bytes((200, 30, 30)), "image/png")).run()
    warned = lambda page: [c for c in texts(page.caption) if "Too few different-class pairs to measure a FAR of 1 % (≥ 1000 needed)" in c]  # noqa: E731
    assert warned(at), "Search"
    assert warned(go(at, "Training")), "Training"


def test_held_out_distances_of_a_run_whose_loss_has_no_margin_call_epsilon_only_a_yardstick(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "nce", gallery, index=False, mining=False)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "loss": "nce", "miner": "none"}))
    at = go(start(monkeypatch, run), "Training")
    (line,) = [c for c in texts(at.caption) if "negative pairs of held-out classes" in c]
    assert "This run's loss is nce (temperature 0.1)\\: no margin; ε is only a yardstick here." in line
