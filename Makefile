# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv when missing.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# torch/torchvision pinned here (not in pyproject.toml) so pip takes the wheels on this machine's disk.
TORCH   := torch==2.14.1 torchvision==0.29.1
SAMPLE  := sample_data/products
RUN     := models/demo
PORT    ?=
# The browser test (tests/test_browser.py) drives Debian's Chromium, found on PATH under this name.
CHROMIUM ?= chromium

export HF_HUB_OFFLINE := 1

.PHONY: install demo test sample-data clean-demo chromium

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) -e ".[dev]"
	$(PY) -c "import torch, torchvision, timm, annoy, streamlit, albumentations, safetensors, typer, facenet_pytorch" 
	@touch $@

sample-data: $(STAMP)
	$(VENV)/bin/retrieval sample-data $(SAMPLE)

# The demo model: trains from scratch in about 80 s on 2 CPU cores (val R@1 0.35 -> 0.79 measured).
DEMO_TRAIN := --backbone resnet10t --image-size 64 --epochs 40 --val-fraction 0.2

demo: $(STAMP) sample-data
	@if [ -f $(RUN)/checkpoint.pt ]; then echo "$(RUN) exists: continuing it (make clean-demo to train from scratch)"; \
	$(VENV)/bin/retrieval train $(SAMPLE)/train --out $(RUN) $(DEMO_TRAIN) --resume; \
	else $(VENV)/bin/retrieval train $(SAMPLE)/train --out $(RUN) $(DEMO_TRAIN); fi
	$(VENV)/bin/retrieval evaluate $(RUN) $(SAMPLE)/test
	$(VENV)/bin/retrieval evaluate $(RUN) --query $(SAMPLE)/test --gallery $(SAMPLE)/catalog
	$(VENV)/bin/retrieval mining $(RUN) --top 5
	$(VENV)/bin/retrieval index $(RUN) $(SAMPLE)/test
	$(VENV)/bin/retrieval app $(RUN) $(if $(PORT),--port $(PORT))

test: $(STAMP) chromium
	$(PY) -m pytest -q

# Chromium for the browser test, installed when missing: with apt, as root or through passwordless sudo;
# otherwise one line says how (the browser test then fails, saying the same).
chromium:
	@if command -v $(CHROMIUM) >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "Chromium is missing and this machine has no apt-get: install Chromium with its package manager to run the browser test (tests/test_browser.py)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "Chromium is missing: the browser test (tests/test_browser.py) needs it; install it as root with: apt-get install chromium"; exit 0; fi; \
	echo "installing Chromium for the browser test: apt-get install chromium"; \
	($$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	 $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; the browser test will fail"

clean-demo:
	rm -rf $(RUN) $(SAMPLE)
