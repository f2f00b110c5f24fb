#!/usr/bin/env bash
# Ablations around the paper's CIFAR-10 result, after scripts/reproduce_paper.sh cifar10 has run:
#   1. OOD score: the OE-tuned checkpoints re-scored with MSP, max logit, energy, the OE term
#      itself (cross-entropy to uniform) and entropy (oe-eval, no training);
#   2. D_out^OE source: 80M Tiny Images vs the 300K random images vs an ImageNet-22K folder;
#   3. OE loss: cross-entropy to uniform (the paper's), Jensen–Shannon to uniform, energy margin
#      (Liu et al. 2020, its own λ = 0.1 and margins).
# Each step is a sweep into ROOT/ablations/<step>; oe-table prints and writes the tables, with
# the baseline sweep of reproduce_paper.sh as the reference.
#
#   scripts/reproduce_ablations.sh                 # DATA=cifar10 SEEDS=0 TRAINER=gpu by default
#   DATA=cifar100 SEEDS=0,1,2 scripts/reproduce_ablations.sh
set -euo pipefail
# DRY_RUN=1 prints the commands instead of running them
run() { if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }

DATA=${DATA:-cifar10}
SEEDS=${SEEDS:-0}
TRAINER=${TRAINER:-gpu}
ROOT=${OE_OUTPUT_DIR:-outputs}/paper/${DATA}
OUT=${ROOT}/ablations
BASELINE="${ROOT}/baseline/seed_\${seed}/checkpoints/last.ckpt"

# 1. scores: the OE-tuned seed 0 under five logit scores and the feature detectors, one forward pass
#    (the paper's evaluation protocol)
run oe-eval -m "ckpt_path=${ROOT}/oe_tune/seed_0/checkpoints/last.ckpt" "data=${DATA}" "ood=${DATA}_paper" \
  evaluation.protocol=paper score=msp "detector=[max_logit,energy,oe,entropy,mahalanobis,knn,vim,react,ash]" \
  "trainer=${TRAINER}" "hydra.sweep.dir=${OUT}/scores" "$@"
run oe-table "${OUT}/scores"

# 2. OE sources (fine-tuning each seed's baseline, λ = 0.5)
run oe-train -m "experiment=paper/${DATA}_oe_tune" oe=tiny_images,random_300k,imagenet22k "seed=${SEEDS}" \
  "trainer=${TRAINER}" "module.pretrained=${BASELINE}" "hydra.sweep.dir=${OUT}/oe_sources" "$@"
run oe-table "${OUT}/oe_sources" "${ROOT}/baseline"

# 3. OE losses: the presets fix λ = 0.5, so the energy margin gets its own λ = 0.1 (Liu et al.)
run oe-train -m "experiment=paper/${DATA}_oe_tune" loss=uniform_ce,js_uniform "seed=${SEEDS}" \
  "trainer=${TRAINER}" "module.pretrained=${BASELINE}" "hydra.sweep.dir=${OUT}/losses" "$@"
run oe-train -m "experiment=paper/${DATA}_oe_tune" loss=energy loss.lambda_oe=0.1 "seed=${SEEDS}" \
  "trainer=${TRAINER}" "module.pretrained=${BASELINE}" "hydra.sweep.dir=${OUT}/losses" "$@"
run oe-table "${OUT}/losses" "${ROOT}/baseline"
