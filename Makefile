# segdeploy: `make demo` installs into .venv and runs the main job; `make test` runs the tests.
# Each stage is a target; RUNS, DATA, BACKENDS, PRECISIONS can be overridden: make bench DATA=path/to/set
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEG := $(VENV)/bin/segdeploy
OUT ?= runs/demo
RUNS ?= $(OUT)/unet-tiny $(OUT)/segformer-tiny
DATA ?= synthetic
BACKENDS ?= torch,onnxruntime,openvino
PRECISIONS ?= fp32,fp16,int8
RESULTS ?= $(OUT)/results.jsonl
# every GPU backend and precision on one CUDA device; what a machine lacks becomes a row with its reason
GPU_BACKENDS ?= torch,torch-compile,onnxruntime-cuda,onnxruntime-trt,tensorrt
GPU_RESULTS ?= $(OUT)/results-gpu.jsonl
# onnxruntime-gpu where an NVIDIA driver answers, the CPU build elsewhere
ORT_EXTRA := $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)

# the CI gate's fixed weights: unet-tiny trained on the synthetic set, committed (tests/data/gate/), exported and
# benched here on its recorded synthetic test split, checked against machine-free entries (results/baseline-fixed.json)
GATE_RUN := tests/data/gate/unet-tiny-fixed
GATE_DATA := synthetic:96
GATE_OUT ?= $(OUT)/gate
GATE_RESULTS := $(GATE_OUT)/results.jsonl

.PHONY: install demo test test-fast train export engines bench bench-gpu cam gate check baseline report env clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CUDA build also runs on CPU; the CPU-only wheel breaks torchvision
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	# openvino: the third CPU runtime (59 MB wheel); pip install -e ".[cpu,test]" leaves it out
	# hf, smp, nnunet: the libraries of `segdeploy models import` (CI tests each format on fixtures it builds)
	$(PY) -m pip install -q -c constraints.txt -e ".[$(ORT_EXTRA),openvino,test,data,cluster,hf,smp,nnunet]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(SEG) demo --out $(OUT)
	$(SEG) report $(OUT) --out $(OUT)/report

# everything (CI, one process); test-fast leaves out the tests marked slow (> ~5 s each) and spreads the rest over
# every core (pytest-xdist), for a developer's edit-test loop
test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow" -n auto

train: install
	for m in unet-tiny segformer-tiny; do $(SEG) train --data $(DATA) --model $$m --out $(OUT)/$$m --epochs 20 --img-size 128 --lr 2e-3 --augment 0.5 || exit 1; done

export: install
	for r in $(RUNS); do $(SEG) export $$r --precisions $(PRECISIONS) || exit 1; done

engines: install
	for r in $(RUNS); do $(SEG) engines build $$r --precisions $(PRECISIONS); done

bench: install
	$(SEG) bench $(RUNS) --data $(DATA) --backends $(BACKENDS) --precisions $(PRECISIONS) --results $(RESULTS)

bench-gpu: install
	$(SEG) bench $(RUNS) --data $(DATA) --backends $(GPU_BACKENDS) --precisions fp32,fp16,bf16,int8 --device cuda --batch 32 --duration 3 --results $(GPU_RESULTS)

cam: install
	for r in $(RUNS); do $(SEG) cam $$r --data $(DATA) --out $$r/cam || exit 1; done

# the regression gate, on any machine: (1) the fixed weights' Dice per backend and precision, within tolerances that
# hold across CPU classes (--strict: every entry must have its row); (2) the demo's own training, per machine class
# (a class without entries is a warning there: its weights differ). Both apply the 99%-of-torch-fp32 rule.
gate: install
	rm -rf $(GATE_OUT) && mkdir -p $(GATE_OUT) && cp -r $(GATE_RUN) $(GATE_OUT)/
	$(SEG) export $(GATE_OUT)/$(notdir $(GATE_RUN)) --precisions fp32,int8
	$(SEG) bench $(GATE_OUT)/$(notdir $(GATE_RUN)) --data $(GATE_DATA) --backends torch,onnxruntime,openvino --precisions fp32,int8 --device cpu --warmup 0 --duration 0 --min-iters 2 --results $(GATE_RESULTS)
	$(SEG) check $(GATE_RESULTS) --baseline results/baseline-fixed.json --strict

check: install gate
	$(SEG) check $(RESULTS) --baseline results/baseline.json

# after a change meant to move accuracy: the demo's results become the new baseline (review the diff before committing)
baseline: install
	$(SEG) check $(RESULTS) --baseline results/baseline.json --write-baseline

report: install
	$(SEG) report $(OUT) --out $(OUT)/report

env: install
	$(SEG) env

clean:
	rm -rf $(OUT)
