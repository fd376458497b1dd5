"""The Hardest negatives page (app_pages/hardest_negatives.py): the mining log with whether the miner
kept each triplet, its filters and paging, the chart of how hard the hardest were, the class
confusions of training and of the trained model's gallery, and runs written before these were
recorded."""

import json

import fake_runs
from app_helpers import bare_run, charts, full_run, gallery, go, start, texts  # noqa: F401


def triplet_cards(at):
    return [m for m in texts(at.markdown) if "d_ap = " in m and "violation" in m]


def test_hardest_negatives_page_shows_triples_filters_and_recurring_pairs(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Hardest negatives")
    assert any("3** logged triplets in epoch 3" in m for m in texts(at.markdown))
    triples = triplet_cards(at)
    assert len(triples) == 3
    gaps = [float(m.split("d_an − d_ap = ")[1].split()[0]) for m in triples]
    assert gaps == sorted(gaps)
    assert "violation **+0.1400**" in triples[0]  # margin 0.2 - gap 0.06
    assert ["not mined" in m for m in triples] == [False, True, False]  # (apple_0, banana_0) was not the miner's
    recurring = [m for m in texts(at.markdown) if "pair was hard in epochs 1, 2, 3" in m]
    assert len(recurring) == 2

    at.selectbox(key="mining_class").set_value("cherry").run()
    assert len(triplet_cards(at)) == 1
    at.selectbox(key="mining_class").set_value("(all classes)").run()
    at.checkbox(key="mining_mined_only").check().run()
    assert len(triplet_cards(at)) == 2 and not any("not mined" in m for m in triplet_cards(at))
    at.checkbox(key="mining_mined_only").uncheck().run()
    at.checkbox(key="mining_recurring").check().run()
    assert len(triplet_cards(at)) == 2
    at.select_slider(key="mining_epoch").set_value(1).run()
    assert any("in epoch 1" in m for m in texts(at.markdown))
    assert len(at.dataframe) == 1  # the confused class pairs of the log


def test_the_chart_shows_every_logged_gap_by_mined_its_zones_and_the_fractions(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Hardest negatives")
    shown = charts(at)
    gap_panel, zone_panel, fraction_panel = shown[:3]  # each panel a chart of its own, in a column of the page
    assert [panel["title"] for panel in shown[:3]] == ["The logged hardest, each epoch", "Below 0, inside the margin, beyond it",
                                                      "Active fraction"]
    points = gap_panel["datasets"][gap_panel["layer"][3]["data"]["name"]]
    assert len(points) == 3 * 3  # three logged triplets in each of three epochs
    assert {(p["epoch"], p["mined"]) for p in points if p["gap"] == 0.0} == {(1, "not mined")}
    zones = zone_panel["datasets"][zone_panel["data"]["name"]]
    assert sum(z["count"] for z in zones if z["epoch"] == 3) == 3
    assert {z["zone"] for z in zones} == {"inside the margin"}  # the fake gaps lie in [0, 0.2)
    assert any("the miner kept 2" in c for c in texts(at.caption))


def test_class_confusions_over_training_rank_pairs_and_follow_the_epochs(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Hardest negatives")
    assert "Class confusions over training" in texts(at.subheader)
    def bars_and_lines():  # a chart each, in two columns of the page
        (bars,) = [c for c in charts(at) if "pair" in str(c.get("encoding", {}).get("y", {}))]
        (lines,) = [c for c in charts(at) if c.get("title") == "Their rate over training"]
        return bars, lines

    bars, lines = bars_and_lines()
    ranked = bars["datasets"][bars["data"]["name"]]
    assert [r["pair"] for r in ranked][:2] == ["apple → banana", "banana → apple"]  # 5 and 3 nearest negatives in epoch 3
    assert ranked[0]["rate"] == 5 / 6
    history = lines["datasets"][lines["data"]["name"]]
    assert [r["epoch"] for r in history if r["pair"] == "apple → banana"] == [1, 2, 3]
    at.select_slider(key="confusion_epoch").set_value(1).run()
    bars, _ = bars_and_lines()
    assert bars["datasets"][bars["data"]["name"]][0]["nearest"] == 3  # cherry → damson and apple → banana tie at 3


def test_the_gallery_confusions_are_shown_as_pictures_of_the_closest_pairs(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Hardest negatives")
    assert "What the trained model confuses in the gallery" in texts(at.subheader)
    pairs = [m for m in texts(at.markdown) if "rank-1 confusions" in m]
    assert 0 < len(pairs) <= 6
    named = [c for c in texts(at.caption) if c.startswith("**") and ".png" in c]
    assert len(named) == 2 * len(pairs)  # both pictures of each pair, named by class and file


def test_a_run_written_before_mined_and_confusions_were_recorded_says_so(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "old", gallery, index=False, mined=False, confusions=False)
    at = go(start(monkeypatch, run), "Hardest negatives")
    assert not at.exception and not at.error
    assert all("mined: not recorded" in m for m in triplet_cards(at)) and len(triplet_cards(at)) == 3
    assert any("not recorded" in c for c in texts(at.caption))
    assert any("Not recorded" in m for m in texts(at.info))
    at.checkbox(key="mining_mined_only").check().run()
    assert len(triplet_cards(at)) == 3  # such a log held only the miner's triplets


def test_large_mining_logs_are_paged(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "long", gallery, index=False, epochs=1)
    rows = [dict(fake_runs.mining_rows(1)[0], d_an=0.5 + i / 100, d_an_minus_d_ap=i / 100) for i in range(20)]
    (run / "mining" / "epoch_001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    at = go(start(monkeypatch, run), "Hardest negatives")
    shown = lambda: [m for m in texts(at.markdown) if "d_ap = " in m]  # noqa: E731
    assert len(shown()) == 8 and shown()[0].startswith("**#1**")
    at.number_input(key="mining_page").set_value(3).run()
    assert len(shown()) == 4 and shown()[0].startswith("**#17**")


def test_run_without_mining_log_says_so(monkeypatch, bare_run):
    at = go(start(monkeypatch, bare_run), "Hardest negatives")
    assert any("no mining log" in m for m in texts(at.info))
    assert not at.error


def test_a_run_without_a_miner_says_its_loss_saw_every_triplet_and_has_no_miner_filter(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "infonce", gallery, index=False, mined=True)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "loss": "infonce", "miner": "none"}))
    at = go(start(monkeypatch, run), "Hardest negatives")
    assert any("this run has no miner (loss infonce)" in c for c in texts(at.caption))
    assert not any("the miner kept" in c for c in texts(at.caption))
    cards = triplet_cards(at)
    assert cards and all("no miner: the loss saw it" in m and "the miner kept" not in m for m in cards)
    box = at.checkbox(key="mining_mined_only")
    assert box.disabled and "no miner" in box.help


def test_a_run_whose_loss_has_no_margin_does_not_call_gaps_below_epsilon_a_loss(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "infonce", gallery, index=False)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "loss": "infonce", "miner": "none"}))
    at = go(start(monkeypatch, run), "Hardest negatives")
    (epoch_line,) = [c for c in texts(at.caption) if "logged hardest triplets" in c]
    assert "a loss still" not in epoch_line
    assert "the ε the log measures against (this run's loss is infonce (temperature 0.1)\\: no margin)" in epoch_line
    assert "mined triplets within ε (each has a loss: the loss has no margin)" in epoch_line
    assert "with a loss, of all triplets inside the margin" not in epoch_line


def test_a_margin_loss_calls_gaps_below_epsilon_a_loss(monkeypatch, full_run):
    at = go(start(monkeypatch, full_run), "Hardest negatives")
    (epoch_line,) = [c for c in texts(at.caption) if "logged hardest triplets" in c]
    assert f"< ε = {fake_runs.MARGIN:g}, a loss still" in epoch_line
    assert "the share of mined triplets with a loss, of all triplets inside the margin" in epoch_line


def test_an_image_linked_from_outside_the_data_folder_is_named_not_shown_and_the_page_goes_on(monkeypatch, tmp_path, gallery):
    import shutil

    data = shutil.copytree(gallery, tmp_path / "data")
    outside = tmp_path / "elsewhere.png"
    shutil.copy(data / "apple" / "apple_0.png", outside)
    (data / "apple" / "apple_0.png").unlink()
    (data / "apple" / "apple_0.png").symlink_to(outside)  # a subset made of links to the real files
    run = fake_runs.make_run(tmp_path / "run", data, index=False)
    at = go(start(monkeypatch, run), "Hardest negatives")
    assert not at.exception and not at.error
    assert len(triplet_cards(at)) == 3 and len(at.dataframe) == 1  # the cards and the confused classes below them
    hidden = [c for c in at.caption if "not shown: apple_0.png" in c.value]
    assert hidden and "through a symbolic link" in hidden[0].help
