"""The figures of docs/when-a-run-goes-wrong.md: Loss_D, D(G(z)) and the spread of the
fixed-noise images of a healthy run beside a failing one, and their grids at iteration 160.

    python -m docs.scripts.health_figures HEALTHY_RUN FAILING_RUN OUT_FOLDER DATAROOT

Both runs need --sample-every 10 (a grid every 10 iterations) and at least 165 iterations.
"""
import csv
import glob
import os
import sys

import numpy as np
import torch
from PIL import Image

import dcgan
from dcgan_beyond import data, health

SHOWN = 165  # iterations drawn in the loss panels


def metrics(run):
    """(iterations, Loss_D, D(G(z)) in D's step) of a run's metrics.csv."""
    with open(os.path.join(run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    return ([int(r["iteration"]) for r in rows], [float(r["Loss_D"]) for r in rows],
            [float(r["D_G_z1"]) for r in rows])


def spreads(run, real_spread, image_size):
    """(iterations, spread of each fixed-noise grid / a real batch's) of a run's grids."""
    points = []
    for path in sorted(glob.glob(os.path.join(run, "progress", "iter_*.png"))):
        grid = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        spread = health.image_spread(health.grid_images(grid, image_size).float())
        points.append((int(os.path.basename(path)[5:12]), spread / real_spread))
    return zip(*points)


def main(healthy, failing, out, dataroot, image_size=64):
    images = dcgan.make_dataset(dataroot, image_size, 3)
    real = health.image_spread(data.real_uint8(images, None, list(range(64)), 0).float())
    fig = dcgan.new_figure((15, 4))
    runs = ((healthy, "healthy (defaults)"), (failing, "D has won (--lr-d 0.0004 --lr-g 0.0001)"))
    for k, (title, key) in enumerate((("Loss_D", 1), ("D(G(z)) in D's step", 2))):
        ax = fig.add_subplot(1, 3, k + 1)
        for run, label in runs:
            found = metrics(run)
            ax.plot(found[0][:SHOWN], found[key][:SHOWN], label=label)
        if key == 1:
            ax.axhline(health.D_WON_LOSS, color="gray", linestyle="--",
                       label=f"{health.D_WON_LOSS} (the monitor's line)")
        ax.set_yscale("log")
        ax.set_xlabel("iterations")
        ax.set_title(title)
        ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 3, 3)
    for run, label in ((healthy, "healthy"), (failing, "D has won")):
        iterations, ratios = spreads(run, real, image_size)
        keep = [i for i, x in enumerate(iterations) if x < 550]
        ax.plot([iterations[i] for i in keep], [ratios[i] for i in keep], label=label)
    ax.axhline(health.COLLAPSE_SPREAD, color="gray", linestyle="--",
               label=f"{health.COLLAPSE_SPREAD}: collapse")
    ax.set_ylim(0, 1)
    ax.set_xlabel("iterations")
    ax.set_title("spread of the 64 fixed-noise images / a real batch's")
    ax.legend(fontsize=8)
    fig.savefig(os.path.join(out, "health.png"), bbox_inches="tight", dpi=80)
    a, b = (Image.open(os.path.join(run, "progress", "iter_0000160.png")).convert("RGB")
            for run in (healthy, failing))
    pair = Image.new("RGB", (a.width * 2 + 10, a.height), "white")
    pair.paste(a, (0, 0))
    pair.paste(b, (a.width + 10, 0))
    pair.resize((pair.width * 3 // 5, pair.height * 3 // 5), Image.LANCZOS).save(
        os.path.join(out, "health_grids.png"), optimize=True)
    print(f"Wrote {out}/health.png and {out}/health_grids.png")


if __name__ == "__main__":
    main(*sys.argv[1:5], *(int(v) for v in sys.argv[5:6]))
