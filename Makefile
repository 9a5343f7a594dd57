# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8501

.PHONY: venv run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev,bench,runtimes]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app/Home.py --server.port $(PORT) --server.maxUploadSize $${MAX_UPLOAD_MB:-10}

test: $(STAMP)
	$(PY) -m ruff check core app api tests benchmarks
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.ingest
	$(PY) -m benchmarks.search
	$(PY) -m benchmarks.analysis
	$(PY) -m benchmarks.api
	$(PY) -m benchmarks.dashboard

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
