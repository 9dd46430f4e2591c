# Two commands on a fresh machine: `make demo` and `make test` (both create .venv/ when missing).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.region-plugin-installed
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM = false
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/$(VENV)/torch_extensions

.PHONY: venv demo test test-fast clean venv-bunny test-bunny

venv: $(STAMP)

$(STAMP): requirements.txt requirements-llava.txt requirements-fixtures.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23.2"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-llava.txt
	$(PY) -m pip install -q --no-deps -r requirements-fixtures.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)
	$(PY) -m region_plugin.llava.demo --out demo_out
	$(PY) -m region_plugin.llava.demo_report --out demo_out

test: $(STAMP)
	$(PY) -m pytest tests -q

test-fast: $(STAMP)
	$(PY) -m pytest tests -q -m "not slow"

clean:
	rm -rf $(VENV) demo_out .pytest_cache

# Upstream Bunny needs its own stack (transformers 4.48.3, see requirements-bunny.txt) and its source
# (not on PyPI): REGION_BUNNY_SRC=/path/to/Bunny or `git submodule update --init third_party/Bunny`.
# With REGION_BUNNY_SRC set, a Bunny test that cannot run fails instead of skipping.
VENV_BUNNY  ?= .venv-bunny
PY_BUNNY    := $(VENV_BUNNY)/bin/python
STAMP_BUNNY := $(VENV_BUNNY)/.region-plugin-installed

venv-bunny: $(STAMP_BUNNY)

$(STAMP_BUNNY): requirements-bunny.txt setup.cfg pyproject.toml
	test -x $(PY_BUNNY) || $(PYTHON) -m venv $(VENV_BUNNY)
	$(PY_BUNNY) -m pip install -q --upgrade "pip>=23.2"
	$(PY_BUNNY) -m pip install -q -r requirements-bunny.txt
	$(PY_BUNNY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY_BUNNY) -m region_plugin.bunny.torchvision_cpu --install-pth
	touch $@

test-bunny: export TORCH_EXTENSIONS_DIR = $(CURDIR)/$(VENV_BUNNY)/torch_extensions
test-bunny: $(STAMP_BUNNY)
	$(PY_BUNNY) -m pytest tests/bunny -q
