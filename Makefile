# Two entry points: `make demo` (the main job, offline) and `make test` (the whole suite).
# Both create .venv on first use; CPU torch is installed first so nothing pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test lint docs browser bench soak clean

$(VENV)/.stamp-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[$(EXTRAS_$*)]'
	$(if $(filter dev,$*),$(MAKE) --no-print-directory browser)
	touch $@

# The web inspector's browser tests drive Debian's Chromium (Playwright's download cannot work offline).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

EXTRAS_demo := local,openai
EXTRAS_dev := dev

demo: $(VENV)/.stamp-demo
	$(PY) -m headroom_integrations.demo

test: $(VENV)/.stamp-dev
	$(PY) -m ruff check headroom_integrations tests benchmarks scripts
	$(PY) -m mkdocs build --strict --quiet --site-dir .site
	$(PY) -m pytest

# The docs site (mkdocs-material, API reference from the docstrings) into .site/.
docs: $(VENV)/.stamp-dev
	$(PY) -m mkdocs build --strict --site-dir .site

lint: $(VENV)/.stamp-dev
	$(PY) -m ruff check headroom_integrations tests benchmarks scripts

# Every figure of docs/benchmarks.md (about 100 minutes on 2 cores): engine (default int8 and fp32 runtime), with_memory, LoCoMo
# retrieval quality (data path: LOCOMO) and how far re-ordering its signals could go, what the retrieval lifts cost per search, the tokens memory injects vs the whole conversation, the answer-level
# LoCoMo F1 (only with OPENAI_API_KEY set: some 1,500 requests and 17 M prompt tokens; without it, skipped),
# the side-by-side run against the peers (their own virtual environments are created once under
# benchmarks/.cache/venvs), SQLite vs PostgreSQL side by side (LoCoMo included), HeadroomStore against LangGraph's stores, and export/import round trips.
LOCOMO ?= ../shared/data/locomo/locomo_dev.json
RESULTS := benchmarks/results
bench: $(VENV)/.stamp-dev
	$(PY) benchmarks/bench_engine.py --out docs/benchmarks.md --json $(RESULTS)/engine.json
	$(PY) benchmarks/bench_engine.py --local-runtime onnx --out docs/benchmarks.md --json $(RESULTS)/engine_fp32.json
	$(PY) benchmarks/bench_with_memory.py --out docs/benchmarks.md --json $(RESULTS)/with_memory.json
	$(PY) benchmarks/locomo_eval.py $(LOCOMO) --out docs/benchmarks.md --json $(RESULTS)/retrieval_quality.json
	$(PY) benchmarks/locomo_ceiling.py $(LOCOMO) --out docs/benchmarks.md --json $(RESULTS)/locomo_ceiling.json
	$(PY) benchmarks/bench_lifts.py --out docs/benchmarks.md --json $(RESULTS)/lifts.json
	$(PY) benchmarks/locomo_compression.py $(LOCOMO) --out docs/benchmarks.md --json $(RESULTS)/compression.json
	$(PY) benchmarks/locomo_answers.py $(LOCOMO) --out docs/benchmarks.md --json $(RESULTS)/locomo_answers.json
	$(PY) benchmarks/bench_peers.py --setup-peers --out docs/benchmarks.md --json $(RESULTS)/peers.json
	$(PY) benchmarks/bench_backends.py --locomo $(LOCOMO) --out docs/benchmarks.md --json $(RESULTS)/backends.json
	$(PY) benchmarks/bench_store.py --out docs/benchmarks.md --json $(RESULTS)/store.json
	$(PY) benchmarks/bench_transfer.py --out docs/benchmarks.md --json $(RESULTS)/transfer.json
	$(PY) benchmarks/bench_scale.py --out docs/benchmarks.md --json $(RESULTS)/scale.json

# The reliability suite (tests/reliability) ten times longer, on new generated inputs; figures into
# docs/reliability.md (the CI-scale section: SCALE=1 LABEL=ci).
SCALE ?= 10
LABEL ?= soak
soak: $(VENV)/.stamp-dev
	$(PY) benchmarks/soak_reliability.py --scale $(SCALE) --label $(LABEL) --out docs/reliability.md --json $(RESULTS)/reliability_$(LABEL).json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
