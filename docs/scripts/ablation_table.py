"""The ablation table of docs/better-faces.md from runs/ablation/*/eval.csv: SWD x1e3 at the
end per level and on average, and the mean of the average over the run (the area under
its curve divided by the run's iterations).

    python -m docs.scripts.ablation_table [RUNS_FOLDER]
"""
import csv
import glob
import os
import sys


def main(folder="runs/ablation"):
    print("| run | 64 px | 32 px | 16 px | average | mean over the run |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for path in sorted(glob.glob(os.path.join(folder, "*", "eval.csv"))):
        with open(path) as f:
            rows = list(csv.DictReader(f))
        it, avg = [int(r["iteration"]) for r in rows], [float(r["swd_avg"]) for r in rows]
        mean = sum((b - a) * (x + y) / 2 for a, b, x, y in zip(it, it[1:], avg, avg[1:])) / it[-1]
        last = [f"{float(rows[-1][k]):.2f}" for k in ("swd_64", "swd_32", "swd_16", "swd_avg")]
        print(f"| {os.path.basename(os.path.dirname(path))} | {' | '.join(last)} | {mean:.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
