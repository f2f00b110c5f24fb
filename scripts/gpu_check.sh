#!/usr/bin/env bash
# Issue 12's goals 1-2 on one lent GPU, in under 10 minutes (each step has its own time limit):
#   bash scripts/gpu_check.sh [OUT_DIR]      # writes OUT_DIR/*.txt|json, prints everything
# 0. a training step and a resident batch never wait for the device (torch's sync debug mode);
# 1. step overhead: the framework vs a hand-written loop, WRN-40-2 and the linear model, on cuda;
# 2. the CIFAR-10 WRN-40-2 10-epoch OE fine-tune per data path (goal: speed=gpu under 60 s),
#    the reference path timed for 1 epoch only (it is the slow one).
set -u
OUT=${1:-${OUT:-gpu_check}}
mkdir -p "$OUT"
export WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)" \
  | tee -a "$OUT/gpu.txt"
timeout 60 python -m pytest -q -n 0 tests/test_module.py tests/test_batch_augment.py -k "never_waits or without_waiting" 2>&1 | tee "$OUT/no_sync_test.txt"
timeout 150 python scripts/benchmark_overhead.py --device cuda --models linear wrn_40_2 --steps 300 200 \
  --repeats 3 3 2>&1 | tee "$OUT/overhead.txt"
timeout 240 python scripts/benchmark_finetune.py --paths gpu resident --epochs 10 --out "$OUT/finetune.json" \
  2>&1 | tee "$OUT/finetune.txt"
timeout 120 python scripts/benchmark_finetune.py --paths reference gpu --epochs 1 --out "$OUT/finetune_1epoch.json" \
  2>&1 | tee "$OUT/finetune_1epoch.txt"
