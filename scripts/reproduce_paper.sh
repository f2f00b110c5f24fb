#!/usr/bin/env bash
# Reproduce one D_in's rows of the Outlier Exposure paper's image results (Hendrycks et al., ICLR
# 2019, Table 1: MSP baseline vs MSP after OE fine-tuning, Wide ResNets, 80M Tiny Images as OE),
# then print our table side by side with the published numbers (per OOD set for CIFAR-10).
#
#   scripts/reproduce_paper.sh cifar10            # cifar10 | cifar100 | svhn | tiny_imagenet
#   scripts/reproduce_paper.sh nlp                # Table 2: SST, 20 Newsgroups, TREC (GRU, WikiText-2 OE)
#   SEEDS=0,1,2 scripts/reproduce_paper.sh cifar100 trainer.devices=1
#   SCRATCH=1 scripts/reproduce_paper.sh cifar10  # + "OE from scratch" (CIFAR only in the paper)
#   CALIBRATION=1 scripts/reproduce_paper.sh cifar10  # + Table 12: baseline and OE tune, with 5,000 held out
#   LAUNCHER=slurm_1gpu scripts/reproduce_paper.sh cifar10 hydra.launcher.partition=gpu
#
# Data: under OE_DATA_DIR (python scripts/prepare_data.py --check cifar10 tiny_images ...).
# Every step is an `oe-train -m` sweep over seeds; each job's directory is named seed_<n>, so
# re-running the script skips finished jobs and resumes interrupted ones from last.ckpt.
# Extra arguments are passed to every oe-train call.
set -euo pipefail
# DRY_RUN=1 prints the commands instead of running them
run() { if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }

DATA=${1:?usage: scripts/reproduce_paper.sh cifar10|cifar100|svhn|tiny_imagenet|nlp [oe-train overrides...]}
shift
SEEDS=${SEEDS:-0}
TRAINER=${TRAINER:-gpu}
ROOT=${OE_OUTPUT_DIR:-outputs}/paper/${DATA}
LAUNCH=()
if [[ -n "${LAUNCHER:-}" ]]; then LAUNCH=("hydra/launcher=${LAUNCHER}"); fi

sweep() {  # sweep STEP EXPERIMENT [overrides...]
  local step=$1 experiment=$2
  shift 2
  run oe-train -m "experiment=paper/${experiment}" "seed=${SEEDS}" "trainer=${TRAINER}" "${LAUNCH[@]}" \
    "hydra.sweep.dir=${ROOT}/${step}" 'hydra.sweep.subdir=seed_${seed}' "$@"
}

# The text experiments (NLP_classification/): each D_in's baseline (train.py), then OE fine-tuning of it
# (train_OE.py), one table over the three
if [[ "${DATA}" == nlp ]]; then
  NLP_ROOT=${ROOT}
  for DATA in sst 20ng trec; do
    ROOT=${NLP_ROOT}/${DATA}
    sweep baseline "${DATA}_baseline" "$@"
    sweep oe_tune "${DATA}_oe_tune" "module.pretrained=${ROOT}/baseline/seed_\${seed}/checkpoints/last.ckpt" "$@"
  done
  run oe-table "${NLP_ROOT}"
  exit 0
fi

# 1. the MSP baseline (paper: 100 epochs CIFAR / 20 SVHN, lr 0.1 / 0.01)
sweep baseline "${DATA}_baseline" "$@"
# 2. OE fine-tuning of each seed's baseline (paper: 10 epochs CIFAR / 5 SVHN, λ = 0.5)
sweep oe_tune "${DATA}_oe_tune" "module.pretrained=${ROOT}/baseline/seed_\${seed}/checkpoints/last.ckpt" "$@"
# 3. optionally OE from scratch
if [[ -n "${SCRATCH:-}" ]]; then sweep oe_scratch "${DATA}_oe_scratch" "$@"; fi

# 4. optionally the calibration runs (paper Table 12, App. G.2): both trained with the paper's
#    held-out images (calibration=paper), the temperature tuned on them at test time
if [[ -n "${CALIBRATION:-}" ]]; then
  sweep calibration/baseline "${DATA}_baseline" calibration=paper "$@"
  sweep calibration/oe_tune "${DATA}_oe_tune" calibration=paper \
    "module.pretrained=${ROOT}/calibration/baseline/seed_\${seed}/checkpoints/last.ckpt" "$@"
fi

# 5. the table: ours vs the paper, Markdown on screen; table.{md,tex,csv} in ROOT
run oe-table "${ROOT}"
