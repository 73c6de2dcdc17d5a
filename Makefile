# topotrace — every target creates the virtual environment it needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CONFIG  ?= configs/digits.toml
# the run's name, runs/$(RUN)/ in every target (default: the config file's name)
RUN     ?= $(basename $(notdir $(CONFIG)))
STAMP   := $(VENV)/.installed
DEV     := $(VENV)/.installed-dev

SEEDS   ?= 0,1,2
STUDY   ?= $(RUN)-study

.PHONY: help setup train analyze report study atlas site info test test-fast bench lint clean

ATLAS_CONFIGS ?= configs/digits.toml configs/digits_cnn.toml configs/mnist1d_mlp.toml configs/mnist1d_cnn.toml \
                 configs/mnist1d_resnet.toml configs/mnist1d_transformer.toml

help:  ## list the targets (RUN=NAME names the run in every target, CONFIG=FILE the training config)
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's/\$$(RUN)/$(RUN)/g' -e 's/\$$(STUDY)/$(STUDY)/g' \
		| awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

# What train, report, study and atlas need: topotrace and MNIST-1D. The tests, benchmarks and integrations (Lightning,
# transformers, Dask, matplotlib, playwright, ruff) come with the first `make test`, `make bench` or `make lint`.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0   # the CPU build; pyproject keeps a range for your own torch
	$(BIN)/pip install --quiet -e '.[mnist1d]'
	touch $(STAMP)

# --no-compile: pip would compile every module of the dev extra (transformers alone has thousands) at install, 28 s of
# a fresh clone's make test against 14 s without; the tests write the bytecode of the few they import (PYTEST below).
$(DEV): $(STAMP)
	$(BIN)/pip install --quiet --no-compile -e '.[dev]'
	touch $(DEV)

setup: $(STAMP)  ## create .venv and install topotrace into it (make test adds what the tests need)

TRAIN    = $(BIN)/topotrace train --config $(CONFIG) --name $(RUN) $(if $(SEED),--seed $(SEED)) $(if $(OVERWRITE),--overwrite)

train: $(STAMP)  ## train CONFIG and record runs/$(RUN)/store.h5 (OVERWRITE=1 to redo; WATCH=1: a live report follows it)
ifdef WATCH
	@mkdir -p runs && $(BIN)/topotrace site runs >/dev/null  # first, so that the live report links to the index
	@$(BIN)/topotrace watch runs/$(RUN) $(if $(OVERWRITE),--new) & watcher=$$!; \
	if $(TRAIN); then wait $$watcher; else status=$$?; kill $$watcher 2>/dev/null; exit $$status; fi
else
	$(TRAIN)
endif

analyze: $(STAMP)  ## analyse runs/$(RUN) (cached in runs/$(RUN)/analysis.h5)
	$(BIN)/topotrace analyze runs/$(RUN)

report: $(STAMP)  ## train if needed, analyse, write runs/$(RUN)/report.html and findings.json (a run or a study)
	@test -f runs/$(RUN)/store.h5 -o -f runs/$(RUN)/study.json || $(BIN)/topotrace train --config $(CONFIG) --name $(RUN) $(if $(SEED),--seed $(SEED))
	@$(BIN)/topotrace site runs >/dev/null  # first, so that the report links back to the index
	$(BIN)/topotrace report runs/$(RUN)
	$(BIN)/topotrace site runs

study: $(STAMP)  ## train, record and analyse SEEDS (0,1,2) of CONFIG into runs/$(STUDY)/; findings across seeds
	@mkdir -p runs && $(BIN)/topotrace site runs >/dev/null
	$(BIN)/topotrace study --config $(CONFIG) --seeds $(SEEDS) --name $(STUDY)
	$(BIN)/topotrace site runs

atlas: $(STAMP)  ## a study (SEEDS) per architecture and data set (ATLAS_CONFIGS): runs/atlas/index.html, atlas.json
	@mkdir -p runs && $(BIN)/topotrace site runs >/dev/null
	$(BIN)/topotrace atlas $(ATLAS_CONFIGS) --seeds $(SEEDS) --name atlas
	$(BIN)/topotrace site runs

site: $(STAMP)  ## write runs/index.html: every run and study in runs/ in one sortable table
	$(BIN)/topotrace site runs

info: $(STAMP)  ## summarise runs/$(RUN)/store.h5
	$(BIN)/topotrace info runs/$(RUN)

# The whole suite on WORKERS parallel processes (pytest-xdist; tests that share a module's setup stay together,
# see tests/conftest.py); WORKERS=0 runs it in this one process. Three on two cores: the suite waits on child
# processes, timers and the browser for about a quarter of its time, and a third worker fills those waits
# (7:10 on two workers, 4:48 on three, 5:06 on four, one quiet machine; again later, back to back: 4:57 on
# three, 5:15 on four; on a slower hour 5:20 on three, 5:58 on four). The fast tests only compute: two.
WORKERS      ?= 3
FAST_WORKERS ?= 2
FAST         := not slow and not browser and not subprocess
# Bytecode caches on for the tests even where the environment turns them off (PYTHONDONTWRITEBYTECODE): each
# worker and each child process would otherwise compile the package and re-rewrite the test modules' asserts.
PYTEST       := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest

test: $(DEV)  ## run the whole test suite (WORKERS=3 parallel processes)
	$(PYTEST) -q $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadgroup --no-loadscope-reorder)

test-fast: $(DEV)  ## the tests without a browser, child processes or training: under a minute, for the edit-test loop
	$(PYTEST) -q -m "$(FAST)" $(if $(filter 0,$(FAST_WORKERS)),,-n $(FAST_WORKERS) --dist loadgroup --no-loadscope-reorder)

bench: $(DEV)  ## run the benchmarks (ratios against baselines measured in the same run)
	$(BIN)/python -m bench

lint: $(DEV)  ## ruff
	$(BIN)/ruff check instrument analysis report_templates topotrace tests bench

clean:  ## remove the virtual environment, runs and caches
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
