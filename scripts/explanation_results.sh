#!/usr/bin/env bash
# Regenerates the explanation-quality section of docs/results.md: the ProtoPNet of
# configs/dermamnist_protopnet.yaml (today's recipe: the whole ResNet18 trunk, 4 x 4 latent cells)
# and the same recipe with protopnet.trunk_layers=2 (layer1-layer2 only: 14 x 14 cells of 25 px),
# 3 seeds each, then scripts/explanation_quality.py (test metrics and explanation quality, paired
# differences) and the HTML report of each recipe's seed-0 model.
# Measured with two runs sharing 2 CPU cores (one thread each): 17-49 min a run, 1 h 30 min for
# the six (bfloat16 training); finished runs are skipped, interrupted ones resume.
# Usage: bash scripts/explanation_results.sh [RUNS_ROOT]   (default: runs)
set -euo pipefail
R=${1:-runs}/explanations
declare -A RECIPE=([today]="" [stages2]="--set protopnet.trunk_layers=2")
for name in today stages2; do for s in 0 1 2; do
  [ -f "$R/$name-s$s/metrics.json" ] && continue
  resume=""; [ -f "$R/$name-s$s/checkpoints/last.pt" ] && resume=--resume
  # shellcheck disable=SC2086
  protoprune train configs/dermamnist_protopnet.yaml --out "$R/$name-s$s" $resume --no-progress \
      --set seed=$s --set train.cpu_amp=true ${RECIPE[$name]}
done; done
python scripts/explanation_quality.py today="$R/today-s0,$R/today-s1,$R/today-s2" \
    stages2="$R/stages2-s0,$R/stages2-s1,$R/stages2-s2" --out "$R/summary"
for name in today stages2; do
  [ -f "$R/$name-s0/report/index.html" ] || protoprune report "$R/$name-s0" --no-progress
done
