#!/usr/bin/env bash
# Train the `base` release stage by stage (each stage resumes from checkpoints/base/<stage>/ where
# it stopped, on any machine), pack it into weights/base (the shipped release), then evaluate that.
# Runs for hours on a CPU; safe to interrupt.
#   bash configs/train_base.sh [stage ...]      (default: every step in order)
set -euo pipefail
cd "$(dirname "$0")/.."
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(prepare vae latents prior stage1 stage2 release evaluate)
for s in "${stages[@]}"; do
  if [ "$s" = release ]; then
    # float16-rounded, compactly stored copy: the model the card measures (≤ 50 MB). Since release 4
    # the shipped model is Stage II's output with the VAE decoder fine-tuned on what the Stage I
    # codec delivers (configs/base.yaml stage2: trainable [vae_decoder]); release 1's Stage II, which
    # trained codec + adapter, made the P-chain unstable (MODEL_CARD.md). RELEASE_FROM packs another
    # model directory (e.g. build/base/stage1, the Stage I model of releases 2 and 3).
    gnvc model pack "${RELEASE_FROM:-models/base}" -o weights/base --half
  else
    gnvc stage "$s" --params configs/base.yaml --metrics-dir reports/base/stages
  fi
done
