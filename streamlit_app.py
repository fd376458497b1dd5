"""The Streamlit front end: look inside a run directory, never train.

Start it with ``retrieval app RUN_DIR`` or ``streamlit run streamlit_app.py -- RUN_DIR``. The run
directory comes from the command line, else the ``RETRIEVAL_RUN_DIR`` environment variable, else
the user picks one of the runs under ``models/`` in the sidebar. A run moved from another machine
is re-rooted by ``RETRIEVAL_GALLERY_ROOTS`` (its gallery folders, joined by ``os.pathsep``) and
``RETRIEVAL_DATA_ROOT`` (its training folder), which ``retrieval app --gallery-root / --data-root`` set.

This file is the entry: page config, the run choice (sidebar), and ``st.navigation`` over the
pages in ``app_pages/`` beside it (Streamlit's multipage layout; each page file is run as a script):

- Search (``app_pages/search.py``): upload a query image or pick one from the gallery; its top-K
  neighbours with label, distance and cosine similarity, under the match / no-match verdict at the
  run's threshold τ; the margin picture (with τ); with the query's label, its nearest positive and
  negative and whether their gap clears ε.
- Verify (``app_pages/verify.py``): two uploads, one verdict: same when their distance d ≤ τ.
- Hardest negatives (``app_pages/hardest_negatives.py``): the mining log epoch by epoch as anchor |
  positive | negative triples with d_ap, d_an and the margin violation, filtered by class, pairs
  that recur across epochs marked; how hardness changed over the epochs.
- Embedding map (``app_pages/embedding_map.py``): the gallery embeddings projected to 2-D (PCA, or
  UMAP when installed), coloured by class, the last query on it.
- Training (``app_pages/training.py``): loss, active fraction, Recall@1, MAP@R, EER per epoch; held-out
  positive- and negative-pair distances against the margin and τ, the ROC / DET curve, another
  target FAR tried (shown, never saved).

Runs trained without class labels (``--unlabelled`` / ``--pairs``) and flat galleries get the same
pages less what needs labels, and each page says so in one line. All numbers come from the library
(:mod:`retrieval.run`, :mod:`retrieval.index`, :mod:`retrieval.diagnostics`) and all charts from
:mod:`retrieval.figures`; the app only lays them out. The model and index are loaded once per run
(``st.cache_resource``, :mod:`app_pages.common`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

from app_pages.common import loss_margin, loss_text, remember_run
from retrieval.errors import RetrievalError
from retrieval.run import CONFIG_NAME, RunConfig, list_runs, read_config
from retrieval.safe_text import markdown_text

APP_FILE = Path(__file__).resolve()
PAGES_DIR = APP_FILE.parent / "app_pages"  # absolute: found wherever streamlit is started from
RUN_DIR_ENV = "RETRIEVAL_RUN_DIR"
DATA_ROOT_ENV = "RETRIEVAL_DATA_ROOT"  # `retrieval app --data-root`: where a moved run's training folder is now
PAGES = {  # title (sidebar and page header) -> page file; the first is the default page
    "Search": "search.py",
    "Verify": "verify.py",
    "Hardest negatives": "hardest_negatives.py",
    "Embedding map": "embedding_map.py",
    "Training": "training.py",
}


def launch_run_dir() -> tuple[Path | None, str]:
    """The run directory given at launch and where it came from: the script's own arguments
    (``streamlit run streamlit_app.py -- RUN_DIR`` sets sys.argv = [script, RUN_DIR]), else the
    RETRIEVAL_RUN_DIR environment variable."""
    argv = sys.argv
    if len(argv) > 1 and argv[0] and Path(argv[0]).resolve() == APP_FILE:
        return Path(argv[1]), "given to `retrieval app`"
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV]), f"set in {RUN_DIR_ENV}"
    return None, ""


def choose_run() -> Path | None:
    """The run given at launch, else the one picked in the sidebar among models/* (None: there is none)."""
    run_dir, source = launch_run_dir()
    if run_dir is not None:
        st.sidebar.caption(f"The run {source}")
        return run_dir
    found: dict[str, Path] = {}
    for models_dir in (Path.cwd() / "models", APP_FILE.parent / "models"):
        for run in list_runs(models_dir):
            found.setdefault(str(run.resolve()), run)
    if not found:
        st.info("No run directory. Start the app with `retrieval app RUN_DIR` (or "
                "`streamlit run streamlit_app.py -- RUN_DIR`), set RETRIEVAL_RUN_DIR, or train a run into models/ "
                "with `retrieval train DATA_DIR --out models/NAME`.")
        return None
    unreadable = {str(run): problem for run in found.values() if (problem := config_problem(run))}
    options = [str(run) for run in found.values()]
    newest_readable = next((number for number, run in enumerate(options) if run not in unreadable), 0)
    chosen = st.sidebar.selectbox(
        "Run", options, index=newest_readable, key="run",
        format_func=lambda p: Path(p).name + (f" (unreadable: {unreadable[p]})" if p in unreadable else ""),
        help="Run directories under models/, newest first; the newest that reads is picked first.")
    return Path(chosen)


def config_problem(run_dir: Path) -> str | None:
    """Why the run's config.json cannot be read, in a few words for the run chooser ("corrupt JSON",
    "not a model config", ...), or None when it reads; picking the run shows the whole message."""
    try:
        read_config(run_dir)
    except OSError as error:  # a file it may not read
        return error.strerror or type(error).__name__
    except RetrievalError as error:
        message = str(error).removeprefix(str(run_dir / CONFIG_NAME)).lstrip(": ")
        return message.split(" (")[0] or "config.json"
    return None


def _detector_reach(faces: dict) -> str:
    """The face detector's reach as config.json records it (DetectorSettings.reach); "?" when unreadable."""
    from retrieval.faces import DetectorSettings

    try:
        return DetectorSettings.from_json(faces.get("detector_settings", {})).reach()
    except (RetrievalError, AttributeError):
        return "?"


def objective_text(config: RunConfig) -> str:
    """The sidebar's loss, miner and margin ε (Markdown): "loss triplet · miner semihard · margin ε = 0.2";
    a loss without a margin says so ("loss infonce (temperature 0.1): no margin · miner none"), with the
    ε its miner chose tuples by, if it has a miner."""
    miner = config.get("miner", "?")
    if loss_margin(config) is not None:
        return f"loss {markdown_text(config.get('loss', '?'))} · miner {markdown_text(miner)} · margin ε = {config.margin:g}"
    miner_margin = "" if miner in ("none", None) else f" (ε = {config.margin:g})"
    return f"loss {markdown_text(loss_text(config))} · miner {markdown_text(miner)}{miner_margin}"


def describe_run(run_dir: Path, config: RunConfig) -> None:
    st.sidebar.markdown(f"**{markdown_text(run_dir.name)}**  \n{markdown_text(run_dir)}")
    st.sidebar.caption(
        f"{markdown_text(config.backbone)} · D = {config.embedding_dim} · {config.image_size} px  \n"
        f"{objective_text(config)}"
        + (f"  \ntrained {config.mode} (no class labels)" if config.mode in ("unlabelled", "pairs") else "")
        + ("" if config.has_validation else "  \nno held-out classes")
        + (f"  \nfaces: detected and aligned ({markdown_text(_detector_reach(config.faces))})" if config.faces else "")
        + ("  \neach image embedded with its mirror image, averaged" if config.flip_average else "")
        + ("  \nimages made grey (trained on grey images only)" if config.data_config.get("greyscale") else "")
    )


def main() -> None:
    st.set_page_config(page_title="Retrieval", page_icon=":material/image_search:", layout="wide")
    st.sidebar.title(":material/image_search: Retrieval")
    run_dir = choose_run()
    if run_dir is None:
        return
    try:
        config = read_config(run_dir)
    except RetrievalError as error:
        st.error(markdown_text(error))
        return
    if os.environ.get(DATA_ROOT_ENV):  # the hardest-negative images of a run moved from another machine
        config = config.updated(data_dir=os.environ[DATA_ROOT_ENV])
    describe_run(run_dir, config)
    remember_run(run_dir, config)
    page = st.navigation([st.Page(PAGES_DIR / file, title=title) for title, file in PAGES.items()])
    try:
        page.run()
    except RetrievalError as error:
        st.error(markdown_text(error))


main()
