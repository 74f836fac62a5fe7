# thinkjepa — every stage is one target. `make help` lists them.
# RECIPE= picks a recipe, ARGS= passes extra CLI overrides, e.g.
#   make train-wm RECIPE=recipes/wm/babyai-tiny.yaml ARGS="--trainer.max_steps=50"

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch 2.14.1 + torchvision 0.29.1 import together on CPU-only machines (timm needs torchvision).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
# One torch thread: tiny models on a few shared cores run many times slower with more.
export THINKJEPA_NUM_THREADS ?= 1

RECIPE ?=
ARGS   ?=
WM     ?= checkpoints/wm/babyai-tiny-stage2/world_model
THINKER ?= checkpoints/thinker/babyai-tiny/thinker
DATA   ?= data/babyai-tiny

.PHONY: help install install-swm data train-wm train-predictor train-distance finetune-thinker eval probe demo test test-slow bench-wm bench-plan bench-plan-swm bench-forecast lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install thinkjepa with its dependencies

install-swm: $(STAMP) ## add stable-worldmodel's environments (TwoRoom, PushT): the swm extra
	$(PY) -m pip install -q -e '.[dev,swm]'

data: $(STAMP) ## collect BabyAI bot episodes: both tiny datasets, or RECIPE=recipes/data/*.yaml
	$(foreach r,$(or $(RECIPE),recipes/data/babyai-tiny.yaml recipes/data/babyai-tiny-dynamics.yaml recipes/data/babyai-tiny-explore.yaml),\
		$(PY) -m thinkjepa.cli collect --config $(r) $(ARGS) &&) true

train-wm: $(STAMP) ## train the world model: stage 1 (encoder + predictor), then stage 2 (predictor on frozen latents)
	$(PY) -m thinkjepa.cli fit --config $(or $(RECIPE),recipes/wm/babyai-tiny.yaml) $(ARGS)
	$(if $(RECIPE),,$(PY) -m thinkjepa.cli fit --config recipes/predictor/babyai-tiny.yaml)

train-predictor: $(STAMP) ## stage 2 alone: fit the predictor on frozen encoder latents (RECIPE=recipes/predictor/*.yaml)
	$(PY) -m thinkjepa.cli fit --config $(or $(RECIPE),recipes/predictor/babyai-tiny.yaml) $(ARGS)

train-distance: $(STAMP) ## stage 3: the goal-distance head (planning cost in actions) on a frozen world model
	$(PY) -m thinkjepa.cli fit --config $(or $(RECIPE),recipes/distance/babyai-gpu.yaml) $(ARGS)

finetune-thinker: $(STAMP) ## LoRA-finetune the thinker against a world model (WM=...)
	$(PY) -m thinkjepa.cli fit --config $(or $(RECIPE),recipes/thinker/babyai-tiny.yaml) \
		--model.init_args.world_model=$(WM) $(ARGS)

eval: $(STAMP) ## evaluate policies (WM=..., THINKER=...)
	$(PY) -m thinkjepa.cli eval --config $(or $(RECIPE),recipes/eval/babyai-tiny.yaml) \
		--world_model=$(WM) --thinker=$(THINKER) $(ARGS)

probe: $(STAMP) ## pose probe of a world model's latents on unseen layouts (WM=..., ARGS="--level ...")
	$(PY) -m thinkjepa.cli probe --world_model=$(WM) $(ARGS)

demo: $(STAMP) ## the released agent at work, then the whole pipeline at tiny scale: collect, train, finetune, evaluate
	$(PY) -m thinkjepa.demo $(ARGS)

test: $(STAMP) ## the default test suite (fast; slow tests need `make test-slow`)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP) ## the slow tests (training to quality bars)
	$(PY) -m pytest -q -m slow $(ARGS)

bench-wm: $(STAMP) ## world-model training throughput (tiny and ViT-S recipes)
	$(PY) benchmarks/bench_wm.py $(ARGS)

bench-forecast: $(STAMP) ## forecasting without actions: JEPA-only / VLM-only / VLM-guided, ADE/FDE in cells
	$(PY) benchmarks/bench_forecast.py $(ARGS)

bench-plan: $(STAMP) ## batched CEM vs a one-episode-at-a-time reference
	$(PY) benchmarks/bench_plan.py $(ARGS)

bench-plan-swm: $(STAMP) ## our CEM vs stable-worldmodel's CEMSolver, same model and budget (needs make install-swm)
	$(PY) benchmarks/bench_plan_swm.py $(ARGS)

lint: $(STAMP) ## ruff
	$(PY) -m ruff check thinkjepa tests benchmarks experiments

clean: ## remove build outputs (keeps .venv, data and checkpoints)
	rm -rf build *.egg-info .pytest_cache .ruff_cache

# ---- released agents: checkpoints/release/<name>/, loaded with HierarchicalPolicy.from_release("<name>") ----------
# A release recipe (recipes/release/*.yaml) lists every stage from data collection to the thinker. `make release-goto`
# runs the stages not yet in checkpoints/release/babyai-goto/ and publishes each export there as it finishes
# (RELEASE_ARGS="--commit true" also commits it), so a rebuild carries on from the last committed stage. Stages
# whose recipe wants a GPU refuse to start without one; RELEASE_ARGS="--cpu true" runs them on the CPU (hours).
# `thinkjepa release status babyai-goto` lists each stage's wall time, hardware and peak memory;
# `thinkjepa release park babyai-goto <stage>` keeps an unfinished stage's checkpoint in the release to commit it.
RELEASE_ARGS ?=
RELEASES ?= babyai-goto babyai-gotolocal
.PHONY: release-goto release-gotolocal eval-release

release-goto: $(STAMP) ## rebuild the released GoTo agent from nothing, stage by stage (resumes)
	$(PY) -m thinkjepa.cli release build recipes/release/babyai-goto.yaml $(RELEASE_ARGS)

release-gotolocal: $(STAMP) ## rebuild the released GoToLocal agent (shares stage 1 with babyai-goto)
	$(PY) -m thinkjepa.cli release build recipes/release/babyai-gotolocal.yaml $(RELEASE_ARGS)

eval-release: $(STAMP) ## the released agents' table: bot / flat / hierarchical, 100 fresh-seed episodes each
	$(foreach r,$(RELEASES),$(PY) -m thinkjepa.cli release evaluate $(r) --workers 2 $(ARGS) &&) true
