# The front door. Two commands, each self-sufficient on a fresh clone:
#   make demo   - the main job on the embedded default
#   make test   - the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint data install clean

demo: $(STAMP) data
	$(PY) -m onceforall demo

test: $(STAMP) data
	$(VENV)/bin/ruff check onceforall tests benchmarks
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check onceforall tests benchmarks

install: $(STAMP)

# torch is installed first and explicitly: this machine's disk has the CPU wheel of 2.13.0, while an
# unpinned `torch` would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

data:
	@scripts/ensure-data.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
