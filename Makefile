# topotrace — every target creates the virtual environment it needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CONFIG  ?= configs/digits.toml
# the run's name, runs/$(RUN)/ in every target (default: the config file's name)
RUN     ?= $(basename $(notdir $(CONFIG)))
STAMP   := $(VENV)/.installed

SEEDS   ?= 0,1,2
STUDY   ?= $(RUN)-study

.PHONY: help setup train analyze report study site info test bench lint clean

help:  ## list the targets (RUN=NAME names the run in every target, CONFIG=FILE the training config)
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -e 's/\$$(RUN)/$(RUN)/g' -e 's/\$$(STUDY)/$(STUDY)/g' \
		| awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0   # the CPU build; pyproject keeps a range for your own torch
	$(BIN)/pip install --quiet -e '.[dev,mnist1d]'  # mnist1d: also when dev is slimmed down (make atlas needs it)
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install topotrace into it

train: $(STAMP)  ## train CONFIG (default: the MLP on digits) and record runs/$(RUN)/store.h5 (OVERWRITE=1 to redo)
	$(BIN)/topotrace train --config $(CONFIG) --name $(RUN) $(if $(SEED),--seed $(SEED)) $(if $(OVERWRITE),--overwrite)

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

site: $(STAMP)  ## write runs/index.html: every run and study in runs/ in one sortable table
	$(BIN)/topotrace site runs

info: $(STAMP)  ## summarise runs/$(RUN)/store.h5
	$(BIN)/topotrace info runs/$(RUN)

test: $(STAMP)  ## run the test suite
	$(BIN)/python -m pytest -q

bench: $(STAMP)  ## run the benchmarks (ratios against baselines measured in the same run)
	$(BIN)/python -m bench

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check instrument analysis report_templates topotrace tests bench

clean:  ## remove the virtual environment, runs and caches
	rm -rf $(VENV) runs .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
