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

.PHONY: help install data train-wm train-predictor train-distance finetune-thinker eval probe demo test test-slow bench-wm bench-plan lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install thinkjepa with its dependencies

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

demo: $(STAMP) ## the whole pipeline at tiny scale: collect, train, finetune, evaluate
	$(PY) -m thinkjepa.demo $(ARGS)

test: $(STAMP) ## the default test suite (fast; slow tests need `make test-slow`)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP) ## the slow tests (training to quality bars)
	$(PY) -m pytest -q -m slow $(ARGS)

bench-wm: $(STAMP) ## world-model training throughput (tiny and ViT-S recipes)
	$(PY) benchmarks/bench_wm.py $(ARGS)

bench-plan: $(STAMP) ## batched CEM vs a one-episode-at-a-time reference
	$(PY) benchmarks/bench_plan.py $(ARGS)

lint: $(STAMP) ## ruff
	$(PY) -m ruff check thinkjepa tests benchmarks

clean: ## remove build outputs (keeps .venv, data and checkpoints)
	rm -rf build *.egg-info .pytest_cache .ruff_cache

# ---- `make goto`: the GoTo agent end to end -----------------------------------------------------------
# Every stage of the best GoTo agent as a file target, in dependency order: a stage whose export exists
# (episodes.json, world_model/config.json, thinker/config.json) is skipped, and a killed training stage
# resumes from its last.ckpt. The recipes name each other's outputs; tests/test_pipeline.py checks that each
# stage reads only what an earlier stage wrote. Stage 1 of the world model wants a GPU (3.5 min on an
# H200); GPU_ARGS="--trainer.accelerator=cpu" runs it on CPU instead (hours). The CPU stages after it take
# about 7 h on 2 cores (the README gives each one's time). `make -n goto` lists what is left to do.
GPU_ARGS ?=
GOTO_EVAL_ARGS ?= --modes '[bot, flat, oracle, hierarchical]' --workers 2
# $(call fit,recipe,run dir[,extra args]): train, resuming from the run's last.ckpt when one is there
fit = $(PY) -m thinkjepa.cli fit --config $(1) $(3) \
	$(if $(wildcard $(2)/checkpoints/last.ckpt),--ckpt_path=$(2)/checkpoints/last.ckpt)

TINY_DATA := $(foreach d,babyai-tiny babyai-tiny-dynamics babyai-tiny-explore,data/$(d)/episodes.json)
GPU_WM    := checkpoints/wm/babyai-gpu
GOTO_WM   := checkpoints/wm/babyai-goto
WAYPOINT  := checkpoints/thinker/babyai-waypoint
GOTO_THINKER := checkpoints/thinker/babyai-goto

.PHONY: goto
goto: results/eval-goto/summary.json ## the GoTo agent end to end: data, world model, thinker, evaluation

data/%/episodes.json: | $(STAMP)
	$(PY) -m thinkjepa.cli collect --config recipes/data/$*.yaml

$(GPU_WM)/world_model/config.json: data/babyai-gpu/episodes.json
	$(call fit,recipes/wm/babyai-tiny-gpu.yaml,$(GPU_WM),$(GPU_ARGS))
$(GPU_WM)-stage2/world_model/config.json: $(GPU_WM)/world_model/config.json $(TINY_DATA)
	$(call fit,recipes/predictor/babyai-gpu.yaml,$(GPU_WM)-stage2)
$(GPU_WM)-distance/world_model/config.json: $(GPU_WM)-stage2/world_model/config.json
	$(call fit,recipes/distance/babyai-gpu.yaml,$(GPU_WM)-distance)
$(WAYPOINT)/thinker/config.json: $(GPU_WM)-distance/world_model/config.json data/babyai-tiny/episodes.json
	$(call fit,recipes/thinker/babyai-waypoint.yaml,$(WAYPOINT))

$(GOTO_WM)/world_model/config.json: $(GPU_WM)/world_model/config.json data/babyai-goto/episodes.json
	$(call fit,recipes/wm/babyai-goto-finetune.yaml,$(GOTO_WM))
$(GOTO_WM)-stage2/world_model/config.json: $(GOTO_WM)/world_model/config.json
	$(call fit,recipes/predictor/babyai-goto.yaml,$(GOTO_WM)-stage2)
$(GOTO_WM)-distance/world_model/config.json: $(GOTO_WM)-stage2/world_model/config.json
	$(call fit,recipes/distance/babyai-goto.yaml,$(GOTO_WM)-distance)
$(GOTO_THINKER)/thinker/config.json: $(GOTO_WM)-distance/world_model/config.json $(WAYPOINT)/thinker/config.json
	$(call fit,recipes/thinker/babyai-goto.yaml,$(GOTO_THINKER))
$(GOTO_THINKER)-stage2/thinker/config.json: $(GOTO_THINKER)/thinker/config.json
	$(call fit,recipes/thinker/babyai-goto-stage2.yaml,$(GOTO_THINKER)-stage2)

results/eval-goto/summary.json: $(GOTO_THINKER)-stage2/thinker/config.json
	$(PY) -m thinkjepa.cli eval --config recipes/eval/babyai-goto.yaml \
		--thinker $(GOTO_THINKER)-stage2/thinker --out results/eval-goto $(GOTO_EVAL_ARGS)

# ---- `make goto-cells`: the GoTo thinker from a grounding-pretrained VLM, one token per cell ------------------
# The VLM's grounding pretraining needs no world model: `make -j2 goto-cells` runs it beside the world model's
# chain (on a machine without a GPU add GPU_ARGS="--trainer.accelerator=cpu --data.init_args.num_workers=0").
GOTO_VLM := checkpoints/vlm/babyai-goto-grounding
GOTO_ROUTER := checkpoints/vlm/babyai-goto-router
.PHONY: pretrain-vlm goto-cells goto-cells-gpu
pretrain-vlm: $(GOTO_ROUTER)/vlm/grounding.json ## grounding pretraining of the GoTo thinker's VLM, 2 phases (no world model; resumes)
goto-cells: results/eval-goto-cells-tabu/summary.json ## the GoTo agent with the thinker started from the pretrained VLM
goto-cells-gpu: results/eval-goto-cells-gpu/summary.json ## goto-cells' thinker continued on a GPU (3138 more steps), evaluated the same way

$(GOTO_VLM)/vlm/grounding.json: | $(STAMP)
	$(call fit,recipes/vlm/babyai-goto-grounding.yaml,$(GOTO_VLM))
$(GOTO_ROUTER)/vlm/grounding.json: $(GOTO_VLM)/vlm/grounding.json
	$(call fit,recipes/vlm/babyai-goto-router.yaml,$(GOTO_ROUTER))
$(GOTO_THINKER)-cells/thinker/config.json: $(GOTO_WM)/world_model/config.json $(GOTO_ROUTER)/vlm/grounding.json
	$(call fit,recipes/thinker/babyai-goto-cells.yaml,$(GOTO_THINKER)-cells)
results/eval-goto-cells/summary.json: $(GOTO_THINKER)-cells/thinker/config.json $(GOTO_WM)-distance/world_model/config.json
	$(PY) -m thinkjepa.cli eval --config recipes/eval/babyai-goto.yaml \
		--thinker $(GOTO_THINKER)-cells/thinker --out results/eval-goto-cells $(GOTO_EVAL_ARGS)
# what `goto-cells` reports: latent L2 weighted 10 in every agent's cost, the thinker's subgoals snapped onto reachable
# states, never the same one twice from the same frame
results/eval-goto-cells-tabu/summary.json: $(GOTO_THINKER)-cells/thinker/config.json $(GOTO_WM)-distance/world_model/config.json
	$(PY) -m thinkjepa.cli eval --config recipes/eval/babyai-goto-snap.yaml \
		--thinker $(GOTO_THINKER)-cells/thinker $(GOTO_EVAL_ARGS)
$(GOTO_THINKER)-cells-gpu/thinker/config.json: $(GOTO_THINKER)-cells/thinker/config.json
	$(call fit,recipes/thinker/babyai-goto-cells-gpu.yaml,$(GOTO_THINKER)-cells-gpu,$(GPU_ARGS))
results/eval-goto-cells-gpu/summary.json: $(GOTO_THINKER)-cells-gpu/thinker/config.json $(GOTO_WM)-distance/world_model/config.json
	$(PY) -m thinkjepa.cli eval --config recipes/eval/babyai-goto-snap.yaml \
		--thinker $(GOTO_THINKER)-cells-gpu/thinker --out results/eval-goto-cells-gpu $(GOTO_EVAL_ARGS)
