# Two entry points; each does its own set-up (a .venv made with pip, the package installed with pinned deps).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?=
OUT ?= runs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo smoke baselines test install bench clean browser

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,serve]'
	@touch $(STAMP)

install: $(STAMP)

# the whole workflow on the best measured CPU recipe (configs/cpu.yaml): data, embeddings, SIDs, SFT, a 3-seed SASRec
# scorer, RL with the tilted loss, evaluation of the SFT and RL models, hybrid re-ranking, bad-case analysis; about
# an hour on 2 cores (docs/benchmarks.md, "make demo"). Re-running skips finished stages. SEED=N trains SFT and RL
# with seed N (e.g. `make demo SEED=2 OUT=runs/demo-s2`; the SIDs and the scorer stay the same).
SEED ?=
demo: $(STAMP)
	$(BIN)/sidrec pipeline --config configs/cpu.yaml $(if $(DATA),--data $(DATA)) --out $(OUT) \
		$(if $(SEED),--set sft.seed=$(SEED) --set rl.seed=$(SEED))

# every stage, scorer and RL included, on tiny settings (first contact; not a result): ~2 min on 2 cores
smoke: $(STAMP)
	$(BIN)/sidrec pipeline --config configs/smoke.yaml $(if $(DATA),--data $(DATA)) --out runs/smoke

# popularity + SASRec baselines and their metrics table, in runs/baselines (~5 min)
baselines: $(STAMP)
	$(BIN)/sidrec baselines $(if $(DATA),--data $(DATA)) --out runs/baselines

# the page's end-to-end test drives headless Chromium (Debian package); without it that one test skips and says why
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "chromium could not be installed: the page test will be skipped"

# two test files at a time, one thread each: on 2 cores this is ~4 min, while torch's default of 2 threads per
# process oversubscribes the cores as soon as a test starts a subprocess (measured: 20 min)
test: $(STAMP) browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -n 2 --dist loadfile

# the benchmark suite (bench/run_all.py): one JSON and one table in bench/out/results.{json,md}; QUICK=1 runs the
# quick modes (under 15 min on 2 cores)
bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(if $(filter 1 yes true,$(QUICK)),--quick)

clean:
	rm -rf runs .pytest_cache
