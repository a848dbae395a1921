# Every target sets itself up from nothing: a fresh clone needs only python3 (>= 3.11).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
DEMO_CORPUS  ?= demo_out/corpus
DEMO_CATALOG ?= demo_out/catalog.zarr

.PHONY: setup demo test wheel-check bench lint format lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(PY) -m msconvert demo-corpus $(DEMO_CORPUS)
	$(PY) -m msconvert amass $(DEMO_CORPUS) --out $(DEMO_CATALOG) --overwrite --preset demo
	$(PY) -m msconvert ls $(DEMO_CATALOG) --columns tracking.joint_error_deg_mean,tracking.joint_error_deg_worst,tracking.body_error_mm_mean,tracking.fraction_tracked,policy.assist_scale,policy.assist_force_pct_bw,train.minutes
	$(PY) -m msconvert plot $(DEMO_CATALOG) DemoLab/subject1/walking --out demo_out/walking.png
	@echo "Catalog: $(DEMO_CATALOG)   Plot: demo_out/walking.png   Policies: $(DEMO_CATALOG).checkpoints"

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

# The wheel as a user gets it: built from the files git sees (tracked and new, not ignored) copied
# to a temp dir (an in-tree build would reuse a stale build/lib), once with exactly the declared
# setuptools floor and once isolated (current setuptools); both are checked against the tree
# (every module and data file, nothing else). The isolated one is installed into a fresh venv
# outside the checkout (dependencies from PyPI, pinned by requirements.lock) and run from a
# directory outside the checkout: demo corpus, static-opt conversion, ls; any failed clip fails.
# It converts the whole demo corpus (5 clips, ~20 s); WHEEL_CHECK_LIMIT=1 converts one.
WHEEL_CHECK_LIMIT ?=
COPY_FILES := import shutil, sys; from pathlib import Path; dst = Path(sys.argv[1]); \
	files = [p for p in sys.stdin.read().split("\0") if p and Path(p).is_file()]; \
	[(dst / p).parent.mkdir(parents=True, exist_ok=True) or shutil.copy2(p, dst / p) for p in files]
SETUPTOOLS_FLOOR := import re, tomllib; \
	reqs = tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]; \
	print(next(m[1] for r in reqs if (m := re.fullmatch(r"setuptools>=([\d.]+)", r.replace(" ", "")))))
CHECK_IMPORT := import os, sys, msconvert, msconvert.emulator.learn.agents as agents; \
	print("wheel-check: imports", msconvert.__file__, msconvert.__version__); \
	venv = os.path.realpath(sys.argv[1]) + os.sep; \
	sys.exit(not all(os.path.realpath(m.__file__).startswith(venv) for m in (msconvert, agents)))
CHECK_CATALOG := import json, sys; rows = json.load(sys.stdin); \
	bad = [r["clip"] + ": " + str(r["reason"]) for r in rows if r["status"] != "complete"]; \
	print(f"wheel-check: {len(rows) - len(bad)} complete, {len(bad)} not", *bad, sep="\n  "); \
	sys.exit(1 if bad or not rows else 0)

wheel-check: setup
	@set -eu; start=$$(date +%s); \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; trap 'exit 130' INT TERM; \
	case "$$tmp/" in "$(CURDIR)"/*) echo "wheel-check: $$tmp is inside the checkout" >&2; exit 1;; esac; \
	git ls-files -z -co --exclude-standard | $(PY) -c '$(COPY_FILES)' "$$tmp/src"; \
	floor=$$(cd "$$tmp/src" && $(CURDIR)/$(PY) -c '$(SETUPTOOLS_FLOOR)'); \
	echo "wheel-check: building in $$tmp with exactly setuptools==$$floor (the declared floor)"; \
	$(PYTHON) -m venv "$$tmp/floor"; \
	"$$tmp/floor/bin/pip" install -q "setuptools==$$floor"; \
	"$$tmp/floor/bin/pip" wheel -q --no-deps --no-build-isolation -w "$$tmp/floor-dist" "$$tmp/src"; \
	$(PY) "$$tmp/src/tests/test_packaging.py" "$$tmp"/floor-dist/msconvert-*.whl; \
	rm -rf "$$tmp/floor" "$$tmp/src/build" "$$tmp/src"/*.egg-info; \
	echo "wheel-check: building with current setuptools (isolated)"; \
	$(VENV)/bin/pip wheel -q --no-deps -w "$$tmp/dist" "$$tmp/src"; \
	wheel=$$(echo "$$tmp"/dist/msconvert-*.whl); \
	$(PY) "$$tmp/src/tests/test_packaging.py" "$$wheel"; \
	echo "wheel-check: installing $$(basename "$$wheel") into a fresh venv"; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/pip" install -q -c "$(CURDIR)/requirements.lock" "$$wheel"; \
	mkdir "$$tmp/run"; cd "$$tmp/run"; unset PYTHONPATH; bin="$$tmp/venv/bin"; \
	"$$bin/python" -c '$(CHECK_IMPORT)' "$$tmp/venv"; \
	"$$bin/msconvert" demo-corpus corpus; \
	"$$bin/msconvert" amass corpus --out out.zarr --method static-opt \
		$(if $(WHEEL_CHECK_LIMIT),--limit $(WHEEL_CHECK_LIMIT)); \
	"$$bin/msconvert" ls out.zarr; \
	"$$bin/msconvert" ls out.zarr --format json | "$$bin/python" -c '$(CHECK_CATALOG)'; \
	echo "wheel-check: ok in $$(( $$(date +%s) - start )) s"

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
