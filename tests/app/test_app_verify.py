"""The Verify page (app_pages/verify.py): two uploads, one verdict at the run's τ, as `retrieval verify` gives."""

import fake_runs
from app_helpers import bare_run, gallery, go, start, texts  # noqa: F401
from retrieval.evaluate import verify_images


def upload_pair(at, first, second):
    for key, (name, payload) in zip(("verify_a", "verify_b"), (first, second)):
        if payload is not None:
            at.file_uploader(key=key).set_value((name, payload, "image/png"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def verdicts(at) -> list[str]:
    return [m for m in texts(at.markdown) if m.startswith(("**d = ", ":green[", ":orange["))]


def test_verify_waits_for_both_images(monkeypatch, bare_run):
    at = go(start(monkeypatch, bare_run), "Verify")
    assert texts(at.header) == ["Verify: same or different?"]
    upload_pair(at, ("a.png", fake_runs.png_bytes((200, 30, 30))), (None, None))
    assert any("Upload both images" in m for m in texts(at.info)) and verdicts(at) == []


def test_same_image_twice_is_the_same_and_the_distance_is_the_command_lines(monkeypatch, bare_run, gallery):
    """bare_run has no index: Verify needs only the model and τ (0.5 in the fake runs)."""
    first, second = gallery / "apple" / "apple_0.png", gallery / "damson" / "damson_2.png"
    at = upload_pair(go(start(monkeypatch, bare_run), "Verify"), (first.name, first.read_bytes()), (first.name, first.read_bytes()))
    (same,) = verdicts(at)
    assert same.endswith("**same: d = 0.000 ≤ τ = 0.500 at FAR 1 %**")
    upload_pair(at, (first.name, first.read_bytes()), (second.name, second.read_bytes()))
    (verdict,) = verdicts(at)
    expected = verify_images(bare_run, first, second)
    word, sign = ("same", "≤") if expected["same"] else ("different", ">")
    assert verdict.endswith(f"**{word}: d = {expected['distance']:.3f} {sign} τ = 0.500 at FAR 1 %**")
    assert any("validation classes, epoch 2" in c for c in texts(at.caption))


def test_beyond_tau_the_two_images_are_different(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "tight", gallery, index=False, mining=False, metrics=False, threshold=1e-4)
    at = upload_pair(go(start(monkeypatch, run), "Verify"), ("red.png", fake_runs.png_bytes((200, 30, 30))),
                     ("blue.png", fake_runs.png_bytes((30, 30, 200))))
    (verdict,) = verdicts(at)
    assert ":material/cancel:] **different: d = " in verdict and "> τ = 0.000 at FAR 1 %" in verdict


def test_without_tau_the_distance_is_shown_with_how_to_set_a_threshold(monkeypatch, tmp_path, gallery):
    run = fake_runs.make_run(tmp_path / "no-tau", gallery, index=False, mining=False, metrics=False, threshold=None)
    at = upload_pair(go(start(monkeypatch, run), "Verify"), ("red.png", fake_runs.png_bytes((200, 30, 30))),
                     ("blue.png", fake_runs.png_bytes((30, 30, 200))))
    (verdict,) = verdicts(at)
    assert verdict.startswith("**d = ") and "no verdict without a threshold" in verdict
    assert any("No threshold τ is set" in m for m in texts(at.info))
    assert any(c.value.startswith(f"retrieval calibrate {run} DATA_DIR") for c in at.code)


def test_an_unreadable_upload_is_one_error_and_no_verdict(monkeypatch, bare_run):
    at = upload_pair(go(start(monkeypatch, bare_run), "Verify"), ("notes.png", b"not a picture"),
                     ("b.png", fake_runs.png_bytes((30, 30, 200))))
    errors = texts(at.error)
    assert len(errors) == 1 and "notes.png" in errors[0] and verdicts(at) == []


def test_uploads_are_shown_at_their_own_size_never_blown_up(monkeypatch, bare_run):
    """A 92 × 112 face photo stretched to the column's width was a blurry 480 px picture."""
    import streamlit

    widths = {}
    real_image = streamlit.image

    def recorded(image, caption=None, **kwargs):
        widths[caption] = kwargs.get("width")
        return real_image(image, caption=caption, **kwargs)

    monkeypatch.setattr(streamlit, "image", recorded)
    upload_pair(go(start(monkeypatch, bare_run), "Verify"), ("a.png", fake_runs.png_bytes((200, 30, 30))),
                ("b.png", fake_runs.png_bytes((2, 30, 30))))
    assert widths.get("a.png") == "content" and widths.get("b.png") == "content", widths
