"""Shared set-up of the app's tests (``streamlit_app.py`` and its pages through Streamlit's AppTest).

Runs are small fakes written like `retrieval train` writes them (tests/fake_runs.py): a random-init
resnet10t at 32 px, a 4-class gallery of 16 images, metrics, a mining log over 3 epochs,
held-out distances, and, for one run, an index. The run directory is given through
RETRIEVAL_RUN_DIR, as a user would without command-line arguments.

Test modules of this folder import it (``from app_helpers import ...``, fixtures included): pytest's
prepend import mode puts this folder on ``sys.path``, and tests/conftest.py puts tests/ there
(for ``fake_runs``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import fake_runs

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "streamlit_app.py"
PAGE_FILES = {  # the page titles of st.navigation -> their files, relative to streamlit_app.py
    "Search": "app_pages/search.py",
    "Verify": "app_pages/verify.py",
    "Hardest negatives": "app_pages/hardest_negatives.py",
    "Embedding map": "app_pages/embedding_map.py",
    "Training": "app_pages/training.py",
}
K_DEFAULT = 10
LABEL_WIDGETS = {"pick_class", "upload_label", "mining_class"}
LABEL_HEADINGS = {"Nearest positive and nearest negative", "Class pairs confused most often", "Class confusions over training",
                  "What the trained model confuses in the gallery"}


# ----------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    return fake_runs.make_gallery(tmp_path_factory.mktemp("gallery"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, gallery):
    return fake_runs.make_run(tmp_path_factory.mktemp("runs") / "full", gallery)


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory, gallery):
    """A run with a model, metrics and held-out distances, but no index and no mining log."""
    return fake_runs.make_run(tmp_path_factory.mktemp("runs") / "bare", gallery, index=False, mining=False)


# ----------------------------------------------------------------------------- driving the app


def start(monkeypatch, run_dir) -> AppTest:
    """The app on ``run_dir`` (through RETRIEVAL_RUN_DIR), run once: it shows its default page, Search."""
    monkeypatch.setenv("RETRIEVAL_RUN_DIR", str(run_dir))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def go(at: AppTest, page: str) -> AppTest:
    """Switch to the page of st.navigation titled ``page``, as a click in the sidebar does."""
    at.switch_page(PAGE_FILES[page]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(at: AppTest, name: str, payload: bytes, mime: str = "image/png") -> AppTest:
    at.file_uploader(key="upload").set_value((name, payload, mime)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ----------------------------------------------------------------------------- reading the page


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def neighbour_cards(at: AppTest) -> list[str]:
    return [m for m in texts(at.markdown) if "d = " in m and "cos = " in m]


def charts(at: AppTest) -> list[dict]:
    """Each chart's Vega-Lite spec with ``"datasets"``: name -> rows (Streamlit sends them as Arrow)."""
    import pyarrow as pa

    specs = []
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        spec["datasets"] = {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pylist() for d in chart.proto.datasets}
        specs.append(spec)
    return specs


def layer_rows(spec: dict, layer: int) -> list[dict]:
    data = spec["layer"][layer].get("data") or spec["data"]
    return spec["datasets"][data["name"]]


def assert_no_label_widgets(at: AppTest) -> None:
    assert not {s.key for s in at.selectbox} & LABEL_WIDGETS
    assert not set(texts(at.subheader)) & LABEL_HEADINGS
    assert not texts(at.success) + texts(at.warning) + texts(at.error)  # no positive / negative verdict, no error
