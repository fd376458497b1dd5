# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv when missing.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# torch/torchvision pinned here (not in pyproject.toml) so pip takes the wheels on this machine's disk.
TORCH   := torch==2.14.1 torchvision==0.29.1
SAMPLE  := sample_data/products
RUN     := models/demo
PORT    ?= 8501

export HF_HUB_OFFLINE := 1

.PHONY: install demo test sample-data clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) -e ".[dev]"
	$(PY) -c "import torch, torchvision, timm, annoy, streamlit, albumentations, safetensors, typer" 
	@touch $@

sample-data: $(STAMP)
	$(VENV)/bin/retrieval sample-data $(SAMPLE)

demo: $(STAMP) sample-data
	$(VENV)/bin/retrieval train $(SAMPLE)/train --out $(RUN) --epochs 6
	$(VENV)/bin/retrieval evaluate $(RUN) $(SAMPLE)/test
	$(VENV)/bin/retrieval index $(RUN) $(SAMPLE)/test
	$(VENV)/bin/retrieval app $(RUN) --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(RUN) $(SAMPLE)
