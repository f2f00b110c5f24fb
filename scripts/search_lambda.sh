#!/usr/bin/env bash
# Optuna search of λ on the validation OOD metric (ID validation split vs held-out OE images; the
# OOD test sets are never looked at), then the best λ from optimization_results.yaml.
#
#   scripts/search_lambda.sh                                   # embedded digits, 20 trials
#   scripts/search_lambda.sh hparams_search=optuna_energy       # energy loss: λ and m_out
#   TRIALS=40 scripts/search_lambda.sh experiment=paper/cifar10_oe_tune trainer=gpu module.pretrained=...
set -euo pipefail
# DRY_RUN=1 prints the commands instead of running them
run() { if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }

TRIALS=${TRIALS:-20}
DIR=${SWEEP_DIR:-${OE_OUTPUT_DIR:-outputs}/sweeps/lambda_search}

run oe-train hparams_search=optuna_lambda "hydra.sweeper.n_trials=${TRIALS}" "hydra.sweep.dir=${DIR}" "$@"
run cat "${DIR}/optimization_results.yaml"
