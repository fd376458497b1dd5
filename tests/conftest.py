"""Shared test set-up: no network (a mistaken pretrained=True fails at once), few threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))
