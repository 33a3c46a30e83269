#!/usr/bin/env bash
# Regenerates the baseline, pruning-curve, schedule and benchmark sections of docs/results.md:
# 3 baseline ResNet18s, their no-fine-tune curves (5 criteria, raw and with the reference's --norm,
# 2 reference draws; LRP also with prune_filters.lrp_batchnorm=train), the iterative schedule with fine-tuning to patience or a cap (5 criteria x 3 seeds),
# bench_filter_pruning, then scripts/collect_results.py writes the tables and docs/figures/*.png.
# About 3 h on 2 CPU cores (bfloat16 training); every step resumes or skips what is done.
# Usage: bash scripts/filter_pruning_results.sh [RUNS_ROOT]   (default: runs)
set -euo pipefail
R=${1:-runs}
RATIOS=0.05,0.1,0.15,0.2,0.3,0.45,0.6
for s in 0 1 2; do
  [ -f "$R/r18-s$s/metrics.json" ] || protoprune train configs/dermamnist_resnet18.yaml \
      --set train.epochs=6 --set train.cpu_amp=true --set seed=$s --out "$R/r18-s$s"
done
for s in 0 1 2; do
  resume=""; [ -f "$R/curves/s$s/curve.json" ] && resume=--resume
  protoprune prune-curve "$R/r18-s$s/checkpoints/best.pt" --ratios $RATIOS --ref-seeds 2 \
      --normalize none,reference --splits test --out "$R/curves/s$s" $resume --no-progress
done
for s in 0 1 2; do  # LRP as the reference's wrapper runs it (batch statistics): what it changes
  resume=""; [ -f "$R/curves-bntrain/s$s/curve.json" ] && resume=--resume
  protoprune prune-curve "$R/r18-s$s/checkpoints/best.pt" --methods lrp --ratios $RATIOS --ref-seeds 2 \
      --normalize none --splits test --set prune_filters.lrp_batchnorm=train \
      --out "$R/curves-bntrain/s$s" $resume --no-progress
done
python benchmarks/bench_filter_pruning.py --out "$R/bench_filter_pruning.json"
for s in 0 1 2; do for m in lrp weight random grad taylor; do
  [ -f "$R/schedule/s$s-$m/results.md" ] && grep -q "| 4 |" "$R/schedule/s$s-$m/results.md" && continue
  protoprune prune-filters "$R/r18-s$s/checkpoints/best.pt" --method $m --total-pr 0.6 --pr-step 0.15 \
      --patience 2 --epochs 5 --finetune-batches 25 --set prune_filters.finetune_lr=0.0001 \
      --no-export --no-progress --force --out "$R/schedule/s$s-$m"
done; done
python scripts/collect_results.py "$R" --figures docs/figures
python scripts/lrp_batchnorm_effect.py "$R"
