#!/usr/bin/env bash
# Splits an image folder into split/train and split/holdout (the last HOLDOUT images), as
# folders of symbolic links: nothing is copied.
#
#   bash docs/scripts/split.sh data/celeba-8k 1000            # split/train: 7,000; split/holdout: 1,000
#   bash docs/scripts/split.sh data/celeba 2000 split-full    # full CelebA: the last 2,000 held out
set -euo pipefail
dataroot=${1:?usage: split.sh DATAROOT HOLDOUT [OUT]}
holdout=${2:?usage: split.sh DATAROOT HOLDOUT [OUT]}
out=${3:-split}
src=$(cd "$dataroot/img_align_celeba" && pwd)
mkdir -p "$out/train/img_align_celeba" "$out/holdout/img_align_celeba"
ls "$src" | head -n "-$holdout" | sed "s|^|$src/|" | xargs ln -sf -t "$out/train/img_align_celeba"
ls "$src" | tail -n "$holdout" | sed "s|^|$src/|" | xargs ln -sf -t "$out/holdout/img_align_celeba"
echo "$out/train: $(ls "$out/train/img_align_celeba" | wc -l) images; $out/holdout: $(ls "$out/holdout/img_align_celeba" | wc -l)"
