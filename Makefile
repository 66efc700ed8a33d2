# Two commands do all set-up on a fresh machine:
#   make demo   -- the main job on the embedded synthetic corpus
#   make test   -- the test suite
# Both create .venv if missing and install the pinned dependencies once (a stamp file
# records the install; it is redone only when a requirements file or pyproject changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed
DEMO_DIR ?= demo_out

.PHONY: install browser test test-fast lint demo bench clean-demo pretrain-corpus musicnn

lint: $(STAMP)
	$(VENV)/bin/ruff check .

$(STAMP): requirements/requirements.txt requirements/constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/requirements.txt
	$(PY) -m pip install -q -c requirements/constraints.txt --no-deps --no-build-isolation -e .
	touch $(STAMP)

# chromium + chromium-driver for the browser test of `deam-mamba serve`: apt, only if missing and allowed;
# never fails (the test skips with its reason without them)
browser:
	-bash scripts/install_chromium.sh

install: $(STAMP) browser

test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	bash scripts/demo.sh $(DEMO_DIR)

bench: $(STAMP)
	bash scripts/bench.sh

# The label-free pretraining corpus: six Debian game-soundtrack packages (apt-get download + dpkg -x, idempotent)
CORPUS_DIR ?= pretrain_corpus
pretrain-corpus: $(STAMP)
	PYTHON=$(abspath $(PY)) bash scripts/fetch_debian_music.sh $(CORPUS_DIR)

# Optional, one-time: the MusiCNN teacher (a separate .teacher-venv with TensorFlow converts the official musicnn
# weights to safetensors and checks the PyTorch port against TensorFlow); not part of test or demo
MUSICNN_DIR ?=
musicnn: $(STAMP)
	PYTHON=$(PYTHON) CHECK_PYTHON=$(abspath $(PY)) bash scripts/setup_musicnn.sh $(MUSICNN_DIR)

clean-demo:
	rm -rf $(DEMO_DIR)
