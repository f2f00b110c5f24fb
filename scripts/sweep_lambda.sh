#!/usr/bin/env bash
# λ × OE-loss sweep (the ablation users run first), then oe-table with the FPR95-vs-λ plot.
#
#   scripts/sweep_lambda.sh                       # embedded digits, CPU, ~3 min on 2 cores
#   scripts/sweep_lambda.sh experiment=paper/cifar10_oe_tune trainer=gpu \
#       module.pretrained=outputs/paper/cifar10/baseline/seed_0/checkpoints/last.ckpt
#   LAMBDAS=0,0.05,0.1,0.5,1 LOSSES=uniform_ce,energy,js_uniform SEEDS=0,1,2 scripts/sweep_lambda.sh
#
# Parallel jobs on one machine: add hydra/launcher=local_parallel; SLURM: hydra/launcher=slurm_1gpu.
set -euo pipefail
# DRY_RUN=1 prints the commands instead of running them
run() { if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }

LAMBDAS=${LAMBDAS:-0,0.1,0.5,1.0}
LOSSES=${LOSSES:-uniform_ce,energy}
SEEDS=${SEEDS:-0}
DIR=${SWEEP_DIR:-${OE_OUTPUT_DIR:-outputs}/sweeps/lambda}

run oe-train -m "loss=${LOSSES}" "loss.lambda_oe=${LAMBDAS}" "seed=${SEEDS}" "hydra.sweep.dir=${DIR}" "$@"
run oe-table "${DIR}"   # table.md/.tex/.csv and fpr95_vs_lambda.png in DIR
