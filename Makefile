# One virtual environment at .venv/, installed the same way for the demo, the tests and CI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench bench-quick clean

install: $(VENV)/.installed

# torch first, pinned: an unpinned torch would pull a CUDA build of several GB.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/dupmae-eval demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs/demo

bench: install
	$(BIN)/python scripts/bench.py

bench-quick: install
	$(BIN)/python scripts/bench.py --quick
