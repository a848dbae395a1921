# Every target sets itself up from nothing: a fresh clone needs only python3 (>= 3.11).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
DEMO_CORPUS  ?= demo_out/corpus
DEMO_CATALOG ?= demo_out/catalog.zarr

.PHONY: setup demo test bench lint format lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(PY) -m msconvert demo-corpus $(DEMO_CORPUS)
	$(PY) -m msconvert amass $(DEMO_CORPUS) --out $(DEMO_CATALOG) --overwrite --preset demo
	$(PY) -m msconvert ls $(DEMO_CATALOG) --columns tracking.joint_error_deg_mean,tracking.body_error_mm_mean,tracking.fraction_tracked,train.minutes
	$(PY) -m msconvert plot $(DEMO_CATALOG) DemoLab/subject1/walking --out demo_out/walking.png
	@echo "Catalog: $(DEMO_CATALOG)   Plot: demo_out/walking.png   Policies: $(DEMO_CATALOG).checkpoints"

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: setup
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/retarget.py
	$(PY) benchmarks/sim.py
	$(PY) benchmarks/learning.py --quick

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: setup
	(echo "# Exact versions for 'make setup' (pip constraints). Regenerate: make lock"; \
	 $(VENV)/bin/pip freeze --exclude-editable | grep -v '^msconvert') > requirements.lock

clean:
	rm -rf $(VENV) demo_out bench_out .pytest_cache .ruff_cache
