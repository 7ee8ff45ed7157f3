# Two commands from a clone: `make setup` (idempotent, quick the second time) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser lint test bench lab quickstart docs clean
setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e ".[dev]"
	touch $(STAMP)

browser:  ## Debian's chromium for the real-browser widget tests (Playwright drives it; it cannot download one here)
	@command -v chromium >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }
	@# a CJK font, or the Chinese of the widgets and screenshots is missing-glyph boxes
	@dpkg -s fonts-noto-cjk >/dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q fonts-noto-cjk; }

lint: setup  ## ruff, the import contracts of pyproject.toml (the layers, no import circle) and mypy on the public modules
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	# one torch thread per process: the models here are tiny, and the browser tests run a kernel beside pytest
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=25

lab: setup  ## the main command: set up, then JupyterLab on the repo (its file browser) with the quickstart open
	HF_HUB_OFFLINE=1 $(BIN)/jupyter lab --ServerApp.root_dir=. notebooks/quickstart.ipynb \
	  $(if $(filter 0,$(shell id -u)),--allow-root,)

quickstart: setup  ## the same notebook, headless (what CI runs)
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/run_notebook.py notebooks/quickstart.ipynb

docs: setup  ## the documentation site, offline and --strict, into build/site (the notebooks run on the embedded default)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: setup
	$(BIN)/python benchmarks/core_bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info
