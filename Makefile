# Facial keypoints: every command a newcomer needs.  `make demo` and `make test` work on a fresh
# clone; each target builds the virtual environment first when it is missing or out of date.

VENV := .venv
PY := $(VENV)/bin/python
# Touched after a successful install: the environment is rebuilt when requirements.txt changes.
STAMP := $(VENV)/.requirements-installed
# Touched after the cluster engine (requirements-cluster.txt: cluster.py and its tests) is installed.
CLUSTER_STAMP := $(VENV)/.cluster-installed
# The course notebooks present in the repository (1. .. 4.); names contain spaces, so the
# recipes loop over this shell glob instead of using make's word lists.
NOTEBOOKS := [1-4]*.ipynb
# Notebooks run with the environment's tools first on PATH and the repository root as cwd
# (nbconvert runs a notebook in its own folder, which is the root).
NB_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
NBCONVERT := $(VENV)/bin/jupyter nbconvert --to notebook --execute

.PHONY: help setup test notebooks data demo bench

help:
	@echo "make setup      create $(VENV) with the pinned requirements and the cluster engine (reruns when"
	@echo "                requirements.txt or requirements-cluster.txt changes)"
	@echo "make demo       set-up, then find the faces and keypoints in a sample photo (outputs/)"
	@echo "make test       set-up, ruff, pytest, then every notebook run top to bottom in quick mode"
	@echo "make data       get the dataset into \$$FKP_DATA or ./data (ARGS=\"--from DIR\" for a local copy)"
	@echo "make notebooks  re-run every notebook in full mode, outputs saved in place"
	@echo "make bench      install the benchmark extras and run bench.py"

setup: $(STAMP) $(CLUSTER_STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	touch $@

$(CLUSTER_STAMP): requirements-cluster.txt $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -r requirements-cluster.txt
	touch $@

test: $(STAMP) $(CLUSTER_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest
	@# Quick mode, executed into a temporary folder: the committed notebooks keep their outputs.
	@out=$$(mktemp -d); failed=""; \
	for nb in $(NOTEBOOKS); do \
		[ -e "$$nb" ] || continue; \
		echo "notebook: $$nb (FKP_QUICK=1)"; \
		start=$$(date +%s); \
		FKP_QUICK=1 $(NB_ENV) $(NBCONVERT) --ExecutePreprocessor.timeout=600 --output-dir "$$out" "$$nb" \
			|| failed="$$failed '$$nb'"; \
		echo "notebook: $$nb took $$(( $$(date +%s) - start ))s"; \
	done; \
	rm -rf "$$out"; \
	if [ -n "$$failed" ]; then echo "notebooks failed:$$failed" >&2; exit 1; fi

notebooks: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
		[ -e "$$nb" ] || continue; \
		echo "notebook: $$nb (full mode, saved in place)"; \
		FKP_QUICK=0 $(NB_ENV) $(NBCONVERT) --ExecutePreprocessor.timeout=-1 --inplace "$$nb" || exit 1; \
	done

data: $(STAMP)
	$(PY) get_data.py $(ARGS)

demo: $(STAMP)
	$(PY) detect.py

bench: $(STAMP)
	$(VENV)/bin/pip install --disable-pip-version-check -r requirements-bench.txt
	$(PY) bench.py $(ARGS)
