"""Metric-learning image retrieval.

Train a timm embedding model on a labelled folder with a contrastive objective and online
mining (``retrieval.training``), index a gallery with Annoy (``retrieval.index``), search and
evaluate it (``retrieval.evaluate``), and see what the model learned (``streamlit_app.py``).
The run directory (DESIGN.md) is the contract between these parts.
"""

__version__ = "0.1.0"
