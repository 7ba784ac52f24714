#!/usr/bin/env bash
# Train the `base` release stage by stage (each stage resumes from checkpoints/base/<stage>/ where
# it stopped, on any machine), then evaluate it. Runs for hours on a CPU; safe to interrupt.
#   bash configs/train_base.sh [stage ...]      (default: every stage in order)
set -euo pipefail
cd "$(dirname "$0")/.."
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(prepare vae latents prior stage1 stage2 evaluate)
for s in "${stages[@]}"; do
  gnvc stage "$s" --params configs/base.yaml --metrics-dir reports/base/stages
done
