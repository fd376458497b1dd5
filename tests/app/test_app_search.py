"""The Search page (app_pages/search.py): uploads, the gallery picker, neighbours, the margin picture."""

import json

import pytest

import fake_runs
from app_helpers import K_DEFAULT, charts, full_run, gallery, go, layer_rows, neighbour_cards, start, texts, upload  # noqa: F401
from retrieval import data


def test_search_page_is_the_default_page_and_waits_for_an_upload(monkeypatch, full_run):
    at = start(monkeypatch, full_run)
    assert texts(at.header) == ["Search the gallery"]
    assert any("Upload an image" in m for m in texts(at.info))
    assert neighbour_cards(at) == []


def test_upload_shows_k_neighbours_with_distances_and_margin_band(monkeypatch, full_run):
    at = upload(start(monkeypatch, full_run), "q.png", fake_runs.png_bytes((10, 220, 30)))
    cards = neighbour_cards(at)
    assert len(cards) == K_DEFAULT
    assert cards[0].startswith("**1. ")
    distances = [float(c.split("d = ")[1].split()[0]) for c in cards]
    assert distances == sorted(distances)
    (margin_spec,) = [c for c in charts(at) if "layer" in c]
    band = layer_rows(margin_spec, 0)
    assert band[0]["low"] == pytest.approx(distances[0], abs=1e-3)
    assert band[0]["high"] == pytest.approx(distances[0] + fake_runs.MARGIN, abs=1e-3)
    assert any("The band runs from the nearest distance" in m for m in texts(at.markdown))

    at.number_input(key="k").set_value(3).run()
    assert len(neighbour_cards(at)) == 3


def test_upload_with_a_known_class_compares_nearest_positive_and_negative(monkeypatch, full_run):
    at = upload(start(monkeypatch, full_run), "q.png", fake_runs.png_bytes((0, 255, 40)))
    at.selectbox(key="upload_label").set_value("apple").run()
    assert not at.exception
    verdicts = texts(at.success) + texts(at.warning) + texts(at.error)
    assert len(verdicts) == 1 and "d_an − d_ap" in verdicts[0]
    assert any(m.startswith("positive: **apple**") for m in texts(at.markdown))
    assert any(m.startswith("negative: **") and "apple" not in m for m in texts(at.markdown))


def test_pick_from_gallery_leaves_the_query_out_and_knows_its_class(monkeypatch, full_run):
    at = start(monkeypatch, full_run)
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    assert any("Pick a gallery image" in m for m in texts(at.info))
    at.selectbox(key="pick_class").set_value("banana").run()
    buttons = [b for b in at.button if b.key and b.key.startswith("pick-")]
    assert len(buttons) == fake_runs.IMAGES_PER_CLASS
    buttons[0].click().run()
    assert not at.exception
    cards = neighbour_cards(at)
    assert len(cards) == K_DEFAULT
    assert buttons[0].label == "pick" and buttons[0].help == "banana/banana_0.png"
    # named in a caption above its button, whole (a button's label was cut): class first, as file names repeat across classes
    assert "banana · banana_0.png" in texts(at.caption)
    assert "banana_0.png" not in texts(at.caption)  # the query is left out of the neighbour cards, which caption their file name
    assert any("the query itself is left out" in c for c in texts(at.caption))
    assert len(texts(at.success) + texts(at.warning) + texts(at.error)) == 1


def test_large_galleries_are_paged_in_the_picker(monkeypatch, full_run):
    at = start(monkeypatch, full_run)
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    assert len([b for b in at.button if b.key.startswith("pick-")]) == 12
    at.number_input(key="pick_page").set_value(2).run()
    assert len([b for b in at.button if b.key.startswith("pick-")]) == 16 - 12


def test_bad_upload_shows_an_error_and_the_app_keeps_working(monkeypatch, full_run):
    at = upload(start(monkeypatch, full_run), "holiday.png", b"this is not a picture at all")
    errors = texts(at.error)
    assert len(errors) == 1 and "cannot read image holiday.png" in errors[0] and errors[0].endswith("Upload a JPEG, PNG, WebP or other image file.")
    assert neighbour_cards(at) == []
    upload(at, "good.png", fake_runs.png_bytes((5, 5, 250)))
    assert texts(at.error) == [] and len(neighbour_cards(at)) == K_DEFAULT
    assert charts(go(at, "Training"))


def test_oversized_upload_is_refused_with_a_clear_message(monkeypatch, full_run):
    monkeypatch.setattr(data.images, "MAX_QUERY_PIXELS", 500)  # uploads have the query limit
    at = upload(start(monkeypatch, full_run), "huge.png", fake_runs.png_bytes((1, 2, 3), size=40))
    errors = texts(at.error)
    assert len(errors) == 1 and "too large" in errors[0] and "huge.png" in errors[0]
    assert errors[0].endswith("Upload a smaller picture (fewer pixels).") and "JPEG" not in errors[0]  # it is a PNG already


def test_a_tiny_upload_is_told_to_upload_a_larger_picture(monkeypatch, full_run):
    at = upload(start(monkeypatch, full_run), "dot.png", fake_runs.png_bytes((1, 2, 3), size=1))
    errors = texts(at.error)
    assert len(errors) == 1 and "too small" in errors[0] and errors[0].endswith("Upload a larger picture.")


def test_a_strip_of_an_upload_is_told_to_upload_a_picture_closer_to_square(monkeypatch, full_run):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (20_000, 4), (1, 2, 3)).save(buffer, format="PNG")
    at = upload(start(monkeypatch, full_run), "strip.png", buffer.getvalue())
    errors = texts(at.error)
    assert len(errors) == 1 and "too elongated" in errors[0] and errors[0].endswith("crop it. Upload a picture closer to square.")


def test_empty_upload_is_refused(monkeypatch, full_run):
    at = upload(start(monkeypatch, full_run), "empty.jpg", b"", "image/jpeg")
    assert any("empty file" in e for e in texts(at.error))


# ----------------------------------------------------------------------------- the verdict at the run's τ


@pytest.fixture(scope="module")
def tau_run(tmp_path_factory, gallery):
    """An indexed run whose threshold τ each test sets (config.json is re-read when rewritten)."""
    return fake_runs.make_run(tmp_path_factory.mktemp("runs") / "tau", gallery, mining=False, metrics=False)


def set_threshold(run, threshold):
    from retrieval.run import RunConfig

    config = RunConfig.read(run).to_dict()
    config.pop("verification", None)
    if threshold is not None:
        config["verification"] = fake_runs.verification_entry(threshold)
    RunConfig(config).write(run)


def verdict_lines(at) -> list[str]:
    return [m for m in texts(at.markdown) if "**match: " in m or "**no match in the gallery" in m]


def test_within_tau_the_banner_names_the_nearest_label_and_the_cards_mark_matches(monkeypatch, tau_run):
    set_threshold(tau_run, 2.0)  # every distance is within it
    at = upload(start(monkeypatch, tau_run), "q.png", fake_runs.png_bytes((10, 220, 30)))
    cards = neighbour_cards(at)
    nearest_label = cards[0].split("**")[1].split(". ", 1)[1]
    d1 = float(cards[0].split("d = ")[1].split()[0])
    (banner,) = verdict_lines(at)
    assert banner.endswith(f"**match: {nearest_label}, d = {d1:.3f} ≤ τ = 2.000 at FAR 1 %**")
    assert all("≤ τ" in card for card in cards)
    assert any("validation classes, epoch 2" in c and "FAR 0.95 %" in c for c in texts(at.caption))
    (margin_spec,) = [c for c in charts(at) if "layer" in c]
    assert layer_rows(margin_spec, 5) == [{"threshold": 2.0, "target_far": 0.01}]
    assert margin_spec["layer"][5]["data"]["name"] == "tau"
    assert margin_spec["layer"][5]["encoding"]["y"]["scale"]["domain"][1] >= 2.0  # the rule is in view


def test_beyond_tau_the_banner_says_no_match_in_the_gallery(monkeypatch, tau_run):
    set_threshold(tau_run, 1e-4)  # nothing but the image itself is within it
    at = upload(start(monkeypatch, tau_run), "q.png", fake_runs.png_bytes((10, 220, 30)))
    cards = neighbour_cards(at)
    d1 = float(cards[0].split("d = ")[1].split()[0])
    (banner,) = verdict_lines(at)
    assert f"**no match in the gallery: the nearest is at d = {d1:.3f} > τ = 0.000 at FAR 1 %**" in banner
    assert not any("≤ τ" in card for card in cards)


def test_verdict_agrees_with_the_command_line_search(monkeypatch, tau_run, gallery):
    from retrieval.index import GalleryIndex

    set_threshold(tau_run, 0.05)
    query = gallery / "cherry" / "cherry_1.png"
    at = upload(start(monkeypatch, tau_run), query.name, query.read_bytes())
    index = GalleryIndex.load(tau_run, device="cpu")
    verdict = index.verdict(index.search(str(query), K_DEFAULT))
    (banner,) = verdict_lines(at)
    assert verdict.match is True and verdict.label == "cherry"
    assert f"**match: cherry, d = {verdict.distance:.3f} ≤ τ = 0.050 at FAR 1 %**" in banner


def test_a_run_without_tau_shows_distances_and_how_to_set_a_threshold(monkeypatch, tau_run):
    set_threshold(tau_run, None)
    at = upload(start(monkeypatch, tau_run), "q.png", fake_runs.png_bytes((10, 220, 30)))
    assert len(neighbour_cards(at)) == K_DEFAULT and verdict_lines(at) == []
    assert any("No threshold τ is set for this run" in m for m in texts(at.info))
    assert any(c.value == f"retrieval calibrate {tau_run} DATA_DIR --target-far 0.01" for c in at.code)
    (margin_spec,) = [c for c in charts(at) if "layer" in c]
    assert len(margin_spec["layer"]) == 5 and "tau" not in {layer["data"]["name"] for layer in margin_spec["layer"]}  # no τ rule


# ----------------------------------------------------------------------------- a loss without a margin


@pytest.fixture(scope="module")
def infonce_run(tmp_path_factory, gallery):
    """An indexed run trained with InfoNCE (temperature 0.1, no miner): its config.json still records ε."""
    run = fake_runs.make_run(tmp_path_factory.mktemp("runs") / "infonce", gallery, mining=False, metrics=False)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "loss": "infonce", "miner": "none"}))
    return run


def test_a_run_whose_loss_has_no_margin_claims_none(monkeypatch, infonce_run):
    at = upload(start(monkeypatch, infonce_run), "q.png", fake_runs.png_bytes((0, 255, 40)))
    at.selectbox(key="upload_label").set_value("apple").run()
    assert not at.exception
    sidebar = " ".join(texts(at.sidebar.caption))
    assert "loss infonce (temperature 0.1)\\: no margin · miner none" in sidebar and "ε" not in sidebar
    (margin_spec,) = [c for c in charts(at) if "layer" in c]
    assert {layer["data"]["name"] for layer in margin_spec["layer"]} == {"bars", "tau", "tau_text"}  # no ε band, nor its edge
    assert any("asked for no margin between a match and a non-match" in m for m in texts(at.markdown))
    assert not any("The band runs" in m or "training asked for a margin" in m for m in texts(at.markdown))
    assert not any("◆" in card for card in neighbour_cards(at))
    (verdict,) = texts(at.success) + texts(at.warning) + texts(at.error)
    assert "d_an − d_ap" in verdict and "triplet" not in verdict and "Inside the margin" not in verdict
    assert "ε =" not in verdict


def test_a_margin_loss_keeps_its_margin_in_the_sidebar_and_the_band(monkeypatch, full_run):
    at = upload(start(monkeypatch, full_run), "q.png", fake_runs.png_bytes((0, 255, 40)))
    assert any(f"loss triplet · miner semihard · margin ε = {fake_runs.MARGIN:g}" in c for c in texts(at.sidebar.caption))
    (margin_spec,) = [c for c in charts(at) if "layer" in c]
    assert margin_spec["layer"][0]["data"]["name"] == "band"


@pytest.mark.parametrize("loss, miner, text, margin", [
    ("triplet", "semihard", "triplet, margin ε = 0.2", 0.2),
    ("contrastive", "none", "contrastive, margin ε = 0.2", 0.2),
    ("lifted", "none", "lifted, margin ε = 0.2", 0.2),
    ("infonce", "none", "infonce (temperature 0.1): no margin", None),
    ("nce", "none", "nce (temperature 0.1): no margin", None),
    ("npair", "none", "npair: no margin", None),
])
def test_the_loss_says_whether_it_trained_with_a_margin(full_run, loss, miner, text, margin):
    from app_pages.common import loss_margin, loss_text
    from retrieval.run import RunConfig

    config = RunConfig.read(full_run).updated(loss=loss, miner=miner, margin=0.2, temperature=0.1)
    assert loss_text(config) == text
    assert loss_margin(config) == margin


# ----------------------------------------------------------------------------- a gallery of one image


def test_picking_the_only_gallery_image_says_there_is_nothing_to_compare_it_with(monkeypatch, tmp_path):
    gallery = fake_runs.make_gallery(tmp_path / "gallery", classes=("apple",), images_per_class=1)
    run = fake_runs.make_run(tmp_path / "run", gallery, mining=False, metrics=False)
    at = start(monkeypatch, run)
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    at.button(key="pick-0").click().run()
    assert not at.exception
    assert any("The gallery holds no other image than the query" in m for m in texts(at.info))
    assert not any(s.startswith("Top ") or s == "Margin picture" for s in texts(at.subheader))
    assert charts(at) == [] and verdict_lines(at) == [] and neighbour_cards(at) == []


def test_the_class_given_for_one_upload_does_not_carry_over_to_the_next(monkeypatch, full_run):
    """A class kept from the previous photo judged the new one against it: its neighbours of its own
    class marked ✗ and "the top match is of the wrong class". A new upload starts on "(unknown)"."""
    at = upload(start(monkeypatch, full_run), "q.png", fake_runs.png_bytes((0, 255, 40)))
    at.selectbox(key="upload_label").set_value("apple").run()
    assert any(m.startswith("positive: **apple**") for m in texts(at.markdown))
    at = upload(at, "other.png", fake_runs.png_bytes((200, 30, 40)))
    assert at.selectbox(key="upload_label").value == "(unknown)"
    assert not any(m.startswith("positive: **") for m in texts(at.markdown)), "no class check without a class"
    at = upload(at, "q.png", fake_runs.png_bytes((0, 255, 40)))
    assert at.selectbox(key="upload_label").value == "(unknown)", "the first photo again is a new query too"


def test_a_neighbour_card_shows_d_with_the_decimals_that_tell_it_from_tau():
    """A face run's distances are small: "d = 0.063" beside a verdict's "τ = 0.063" read as a match
    that was not one (d 0.0633, τ 0.0626)."""
    from types import SimpleNamespace

    from app_pages.common import neighbour_distance

    index = SimpleNamespace(threshold=SimpleNamespace(threshold=0.0626))
    assert neighbour_distance(index, 0.0633, False) == "d = 0.0633"
    assert neighbour_distance(index, 0.0611, True) == "d = 0.061 ≤ τ"  # 3 decimals tell it from 0.063
    assert neighbour_distance(index, 0.0631, False) == "d = 0.0631"
    assert neighbour_distance(index, 0.5, False) == "d = 0.500"
    assert neighbour_distance(SimpleNamespace(threshold=None), 0.0633, None) == "d = 0.063"
