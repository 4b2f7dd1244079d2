# Two set-up commands on a fresh machine with Python 3.11:  make demo  /  make test
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel; on a CUDA box use e.g. TORCH="torch==2.13.0 --index-url <your CUDA wheel index>" (unquoted below,
# so the words reach pip apart) or install torch first.
TORCH ?= torch==2.13.0
TRIALS ?= 8
BIN := $(VENV)/bin
# One stamp per TORCH value (a checksum of its words): a different TORCH on a later `make install` has no stamp
# yet, so torch is reinstalled from it. pip alone would keep the old build: torch==2.13.0 matches 2.13.0+cpu.
TORCH_STAMP := $(VENV)/.torch-$(shell printf '%s' '$(TORCH)' | cksum | cut -d' ' -f1)

.PHONY: install demo test lint test-fast bench bench-search clean

install: $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(TORCH_STAMP): | $(BIN)/python
	if ls $(VENV)/.torch-* >/dev/null 2>&1; then $(BIN)/pip uninstall -q -y torch; rm -f $(VENV)/.torch-*; fi
	$(BIN)/pip install -q $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(TORCH_STAMP)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: install  ## the main job: search on the default data, then retrain + evaluate the best
	$(BIN)/fersearch tune --trials $(TRIALS) --name demo-$$(date +%Y%m%d-%H%M%S)
	$(BIN)/fersearch best --evaluate

test: install lint  ## the lint gate, then the whole test suite (unit + slow end-to-end)
	$(BIN)/python -m pytest -q

lint: install  ## ruff and mypy (settings in pyproject.toml); `make test` runs it first
	$(BIN)/ruff check fersearch tests benchmarks
	$(BIN)/mypy fersearch

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install  ## the benchmarks that take minutes (bench_search in its --quick form)
	@for b in bench_data bench_train bench_state bench_tune; do echo "== $$b"; $(BIN)/python benchmarks/$$b.py; done
	@echo "== bench_search --quick"; $(BIN)/python benchmarks/bench_search.py --quick

B := results/bench_search
bench-search: install  ## the samplers compared at 16 trials x 30 epochs: 2 data sets x 3 seeds (~2 h on 2 CPU cores); cut short, run it again
	mkdir -p $(B)
	$(BIN)/python benchmarks/bench_search.py --n 2400 --log $(B)/runs.jsonl --curves $(B)/curves.jsonl --keep $(B)/keep --out $(B)/bench.json
	$(BIN)/python benchmarks/replay_rungs.py $(B)/curves.jsonl > $(B)/replay.json
	$(BIN)/python benchmarks/bench_ties.py $(B)/keep > $(B)/ties.json
	$(BIN)/python benchmarks/bench_tiebreak.py $(B)/keep --n 2400 --log $(B)/runs.jsonl --out $(B)/tiebreak.json

clean:
	rm -rf $(VENV) *.egg-info
