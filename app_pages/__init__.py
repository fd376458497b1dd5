"""The pages of the Streamlit front end (``streamlit_app.py`` is its entry).

``streamlit_app.py`` chooses the run and hands the pages to ``st.navigation``; each page file
(``search.py``, ``hardest_negatives.py``, ``embedding_map.py``, ``training.py``) is run by
Streamlit as a script and lays out what :mod:`retrieval.diagnostics` computes and
:mod:`retrieval.figures` draws. :mod:`app_pages.common` holds what they share: the chosen run, the
cached model / index / mining log, thumbnails.
"""
