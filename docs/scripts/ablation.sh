#!/usr/bin/env bash
# The ablation of docs/better-faces.md: twelve 10-epoch runs on split/train (make it with
# docs/scripts/split.sh), SWD against split/holdout every 110 iterations, into runs/ablation/.
# About 25 minutes a run on 2 CPU cores. Then: python -m docs.scripts.ablation_table
set -euo pipefail
for run in "default" "diffaug --diffaug" "ema --ema 0.999" "hinge --loss hinge" \
           "sn --spectral-norm" "ttur --lr-d 0.0004 --lr-g 0.0001" \
           "diffaug-ema --diffaug --ema 0.999" "hinge-ema --loss hinge --ema 0.999" \
           "sagan --spectral-norm --loss hinge --lr-d 0.0004 --lr-g 0.0001 --ema 0.999" \
           "default-seed1 --seed 1" "diffaug-ema-seed1 --diffaug --ema 0.999 --seed 1" \
           "hinge-seed1 --loss hinge --seed 1"; do
  set -- $run; name=$1; shift
  python dcgan.py --dataroot split/train --eval-dataroot split/holdout --num-epochs 10 \
    --eval-every 110 --outdir "runs/ablation/$name" "$@"
done
