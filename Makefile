# The two set-up commands: `make demo` (run the whole DAG on the embedded demo) and `make test`.
# Both create .venv when missing and reinstall only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all

.PHONY: demo test test-slow install install-test browser lint format clean-results bench scale-test soak gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,tracking]'
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/snakemake --cores $(CORES) --resources gpu=1  # the Snakefile's default config/config.yaml
	@echo ""
	@echo "Report: $(CURDIR)/results/report/index.html"
	@echo "Deploy bundle: $(CURDIR)/results/deploy/ (serve with: $(BIN)/vecflow serve --bundle results/deploy/vecflow-demo)"

# Debian's chromium lets the report test render the page in a real browser; skipped where it can't install.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian chromium for the report browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "chromium could not be installed: the browser test will be skipped"; \
	fi

# make test: the fast set (tests marked slow - real tiny training and workflow runs - are left out); CI (.ci/run)
# runs make test, then make test-slow, so nothing is skipped there.
test: install-test browser
	$(BIN)/python -m pytest -m "not slow"

test-slow: install-test browser
	$(BIN)/python -m pytest -m slow

lint: install-test
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

format: install-test
	$(BIN)/snakefmt Snakefile workflow/rules

# Every benchmark side by side with its peer (figures in BENCHMARKS.md, JSON in results/bench/); ~30 min on 2 cores.
# `pipeline` times a no-op rerun and a report regeneration of the finished `make demo` run (run it first).
$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'  # sentence-transformers, scipy, scikit-learn: wheels
	@touch $@

# The data the full-size benchmarks read: a DialogSum folder (dev.jsonl, train.jsonl; resources/data/dialogsum
# after fetch_data from the hub, or your own copy) and the wikitext config's chunks.jsonl.
BENCH_DIALOGSUM ?= ../shared/data/dialogsum
BENCH_CHUNKS    ?= results/wikitext/lvm/chunks.jsonl
bench: $(VENV)/.installed-bench
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/vecflow bench all --size full --out-dir results/bench \
		--dialogsum $(BENCH_DIALOGSUM) --chunks $(BENCH_CHUNKS)
	$(BIN)/vecflow bench table --out-dir results/bench --markdown BENCHMARKS.md

# The LVM scale test (issue 13): a synthetic 600,000 x 768 bank through windows -> diagnose -> one epoch -> 5CAT;
# wall time and peak RSS per stage from Snakemake's benchmark files in results/scale/scale_table.md. Not in CI
# (tests/test_lvm_scale.py runs a few thousand chunks); SCALE_CHUNKS / SCALE_DIM change the size.
SCALE_CHUNKS ?= 600000
SCALE_DIM    ?= 768
scale-test: install
	$(BIN)/snakemake -s workflow/scale/Snakefile -d results/scale --cores $(CORES) \
		--config chunks=$(SCALE_CHUNKS) dim=$(SCALE_DIM)
	@cat results/scale/scale_table.md

# The server's soak test (issue 23): SOAK_SECONDS (30 min) on loopback against SOAK_BUNDLE (`make demo`'s), 8
# clients over every endpoint with 20 % malformed requests and a /health probe; the table goes to results/soak/.
# CI runs a 60-second version (tests/test_soak.py). Exit 1 on any 5xx or dropped connection.
SOAK_SECONDS ?= 1800
SOAK_BUNDLE  ?= results/deploy/vecflow-demo
soak: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m vecflow.ship.soak --bundle $(SOAK_BUNDLE) \
		--seconds $(SOAK_SECONDS) --out-dir results/soak

# The GPU check (issue 25): every family trained briefly on the demo data on CUDA (or MPS: GPU_CHECK_DEVICE=mps),
# each training job's log must show that device; samples/s per family in results/gpu-check/gpu_check.md.
GPU_CHECK_DEVICE ?= cuda
gpu-check: install
	$(BIN)/snakemake --cores $(CORES) --resources gpu=1 --configfile config/gpu-check.yaml \
		--config device=$(GPU_CHECK_DEVICE) --forcerun gpu_check -- results/gpu-check/gpu_check.json
	@cat results/gpu-check/gpu_check.md

clean-results:
	rm -rf results/* .snakemake
