"""Class names, file names and upload names are shown as text in the app, never as Markdown: a label
``![pic](x.png)`` made the browser fetch a picture, ``:red[...]`` coloured text, ``**x**`` bolded it."""

import json

import fake_runs
from app_helpers import go, start, texts, upload
from retrieval.safe_text import markdown_text

HOSTILE = ("![pic](x.png)", "**bold** _it_", "[sale] shoes", ":red[alarm]", "esc\x1b[31mx")
UPLOAD_NAME = "up ![u](http:x.png) :red[u].png"


def markdown_sources(at) -> list[str]:
    """Every text the page hands to Streamlit's Markdown renderer (bodies, captions, alerts, button labels)."""
    sources = [*texts(at.markdown), *texts(at.caption), *texts(at.info), *texts(at.error), *texts(at.warning),
               *texts(at.success), *texts(at.sidebar.markdown), *texts(at.sidebar.caption)]
    return sources + [b.label for b in at.button]


def assert_shown_as_text(at, names, *, shown_here: bool = True) -> None:
    """No Markdown link, image or HTML in any text of the page, none of ``names`` unescaped, and (``shown_here``)
    one of them escaped."""
    from markdown_it import MarkdownIt

    sources = markdown_sources(at)
    for source in sources:
        tokens = MarkdownIt("commonmark").parse(source)
        kinds = {t.type for t in tokens} | {c.type for t in tokens for c in (t.children or [])}
        assert not kinds & {"image", "link_open", "html_inline", "html_block"}, source
        for name in names:
            assert name not in source, source  # only its escaped form
        assert "\x1b" not in source
    shown = [name for name in names if any(markdown_text(name) in source for source in sources)]
    assert shown or not shown_here, sources


def test_hostile_class_and_file_names_render_as_text_on_every_page(monkeypatch, tmp_path):
    gallery = fake_runs.make_gallery(tmp_path / "gallery", classes=HOSTILE)
    run = fake_runs.make_run(tmp_path / "run", gallery, mining=False)
    (run / "mining").mkdir()
    rows = []
    for i, (a, n) in enumerate(zip(HOSTILE, HOSTILE[1:] + HOSTILE[:1])):
        rows.append({"epoch": 1, "anchor_path": f"{a}/{a}_0.png", "anchor_label": a, "positive_path": f"{a}/{a}_1.png",
                     "positive_label": a, "negative_path": f"{n}/{n}_0.png", "negative_label": n,
                     "d_ap": 0.5, "d_an": 0.4 + 0.01 * i, "d_an_minus_d_ap": round(-0.1 + 0.01 * i, 6)})
    (run / "mining" / "epoch_001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "mining" / "epoch_002.jsonl").write_text("".join(json.dumps({**r, "epoch": 2}) + "\n" for r in rows))

    at = upload(start(monkeypatch, run), UPLOAD_NAME, fake_runs.png_bytes((0, 200, 40)))
    at.selectbox(key="upload_label").set_value(HOSTILE[0]).run()
    assert_shown_as_text(at, HOSTILE + (UPLOAD_NAME,))
    at.radio(key="query_source").set_value("Pick from the gallery").run()
    at.button(key="pick-0").click().run()
    assert_shown_as_text(at, HOSTILE)
    for page in ("Hardest negatives", "Embedding map", "Training"):
        assert_shown_as_text(go(at, page), HOSTILE + (UPLOAD_NAME,), shown_here=page == "Hardest negatives")


def test_a_bad_upload_named_like_markdown_is_named_as_text_in_the_error(monkeypatch, tmp_path):
    gallery = fake_runs.make_gallery(tmp_path / "gallery", classes=("a", "b"))
    run = fake_runs.make_run(tmp_path / "run", gallery, mining=False)
    at = upload(start(monkeypatch, run), UPLOAD_NAME, b"not an image")
    (error,) = texts(at.error)
    assert markdown_text(UPLOAD_NAME) in error and UPLOAD_NAME not in error
