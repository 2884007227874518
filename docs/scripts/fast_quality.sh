#!/usr/bin/env bash
# Quality at equal iterations: the default and --fast, seeds 999 and 1, 10 epochs on
# split/train (the first 7,000 faces; make it with docs/scripts/split.sh), SWD against
# split/holdout every 110 iterations, into runs/fast/. Then:
#   python -m docs.scripts.fast_quality runs/fast docs-figure.png
set -euo pipefail
for run in "default-999 --seed 999" "default-1 --seed 1" "fast-999 --fast --seed 999" "fast-1 --fast --seed 1"; do
  set -- $run; name=$1; shift
  python dcgan.py --dataroot split/train --eval-dataroot split/holdout --num-epochs 10 \
    --eval-every 110 --outdir "runs/fast/$name" "$@"
done
