"""The SWD curves of the default and --fast runs side by side (docs/performance.md), from
RUNS/{default,fast}-{999,1}/eval.csv, a table of the average SWD at each evaluation and its
mean over the run, and the four last fixed-noise grids side by side (OUT_grids.png).

    python -m docs.scripts.fast_quality RUNS OUT.png
"""
import csv
import os
import sys

import dcgan
from PIL import Image

RUNS = ("default-999", "default-1", "fast-999", "fast-1")


def curve(folder):
    """(iterations, average SWD) of a run's eval.csv."""
    with open(os.path.join(folder, "eval.csv")) as f:
        rows = list(csv.DictReader(f))
    return [int(r["iteration"]) for r in rows], [float(r["swd_avg"]) for r in rows]


def mean_over_run(iterations, values):
    """The area under the curve divided by the run's iterations (trapezoids)."""
    area = sum((b - a) * (x + y) / 2 for a, b, x, y in
               zip(iterations, iterations[1:], values, values[1:]))
    return area / iterations[-1]


def main(runs, out):
    curves = {name: curve(os.path.join(runs, name)) for name in RUNS}
    iterations = curves[RUNS[0]][0]
    print("| run | " + " | ".join(str(i) for i in iterations) + " | mean over the run |")
    print("| --- |" + " ---: |" * (len(iterations) + 1))
    for name, (its, values) in curves.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values)
              + f" | {mean_over_run(its, values):.2f} |")
    fig = dcgan.new_figure((10, 5))
    ax = fig.add_subplot()
    for name, (its, values) in curves.items():
        ax.plot(its, values, marker="o", linestyle="-" if name.startswith("default") else "--",
                label=name.replace("-", ", seed ").replace("fast", "--fast"))
    ax.set_title("SWD x1e3 to 1,000 held-out faces (lower is better)")
    ax.set_xlabel("iterations")
    ax.set_yscale("log")
    ax.legend()
    fig.savefig(out, bbox_inches="tight", dpi=80)
    grids = [Image.open(os.path.join(runs, name, "progress", f"iter_{curves[name][0][-1]:07d}.png"))
             .convert("RGB") for name in RUNS]
    side = grids[0].width
    row = Image.new("RGB", (len(grids) * (side + 10) - 10, side), "white")
    for k, grid in enumerate(grids):
        row.paste(grid, (k * (side + 10), 0))
    grids_path = out[:-len(".png")] + "_grids.png"
    row.resize((row.width // 2, row.height // 2), Image.LANCZOS).save(grids_path, optimize=True)
    print(f"Wrote {out} and {grids_path} ({', '.join(RUNS)}, left to right)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
