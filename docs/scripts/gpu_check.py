#!/usr/bin/env python3
"""The CUDA checks, in one run of about 7 minutes on one GPU: one PASS or FAIL line each,
with its figures, and INFO lines that assert nothing; the exit status is 1 when any check
failed. On a machine without CUDA every line says "no CUDA device" and it exits 0, so it
is safe anywhere.

    python -m docs.scripts.gpu_check                  # every check, from the repository's root
    python -m docs.scripts.gpu_check --only bench     # some of them (names below)

Checks: devices, tutorial, resume, flags, bench, celeba, adam. Images are random JPEGs
made in a temporary folder (a CelebA-sized folder is 202,599 links to 8,000 of them).
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import torch

import bench
import dcgan
from dcgan_beyond import cli, devices

ROOT = os.path.dirname(os.path.abspath(dcgan.__file__))

CHECKS = ("devices", "tutorial", "resume", "flags", "bench", "celeba", "adam")
# Every flag combination the product offers on CUDA (--amp --compile --channels-last
# drops --channels-last with a note, so it is checked as it runs).
FLAG_SETS = [[], ["--amp"], ["--compile"], ["--channels-last"], ["--amp", "--channels-last"],
             ["--amp", "--compile"], ["--compile", "--channels-last"],
             ["--amp", "--compile", "--channels-last"], ["--deterministic"], ["--no-cache"],
             ["--ema", "0.999"]]


class Results:
    """The lines of one run: check() asserts what its line says, info() only reports."""

    def __init__(self):
        self.failed = []

    def check(self, ok, name, figures):
        print(f"{'PASS' if ok else 'FAIL'} {name}: {figures}", flush=True)
        if not ok:
            self.failed.append(name)
        return ok

    def info(self, name, figures):
        print(f"INFO {name}: {figures}", flush=True)

    def status(self):
        """The exit status: 0 when every check passed, else 1 (the failed ones listed)."""
        if self.failed:
            print(f"{len(self.failed)} failed: {'; '.join(self.failed)}", flush=True)
        return 1 if self.failed else 0


def train(tmp, name, *flags, dataroot):
    """python dcgan.py in a fresh process; returns (exit status, seconds, outdir, output)."""
    outdir = os.path.join(tmp, name)
    command = [sys.executable, os.path.join(ROOT, "dcgan.py"), "--dataroot", dataroot,
               "--outdir", outdir, "--cache-dir", os.path.join(tmp, "cache"), *flags]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    return done.returncode, time.perf_counter() - start, outdir, done.stdout + done.stderr


def metrics(outdir):
    with open(os.path.join(outdir, "metrics.csv")) as f:
        return [[float(row[k]) for k in ("Loss_D", "Loss_G", "D_x", "D_G_z1", "D_G_z2")]
                for row in csv.DictReader(f)]


def same_weights(a, b):
    """Names of the tensors of netG.pt and netD.pt that differ between two outdirs (BatchNorm
    running statistics aside: a run's extra grid moves them)."""
    differ = []
    for name in ("netG.pt", "netD.pt"):
        x, y = (torch.load(os.path.join(d, name), weights_only=True) for d in (a, b))
        differ += [f"{name}:{k}" for k in x if "running" not in k and "num_batches" not in k
                   and not torch.equal(x[k], y[k])]
    return differ


def check_devices(results, tmp, data):
    for device in ("cuda", "auto"):
        status, seconds, outdir, output = train(tmp, f"device-{device}", "--device", device,
                                                "--max-iters", "20", dataroot=data)
        rows = len(metrics(outdir)) if status == 0 else 0
        results.check(status == 0 and rows == 20, f"--device {device} trains",
               f"exit {status}, {rows} of 20 iterations, {seconds:.1f} s"
               + ("" if status == 0 else f"; {output.strip().splitlines()[-1]}"))


def check_tutorial(results, tmp, data):
    """dcgan.py --deterministic equals the tutorial's loop in the same mode on CUDA."""
    iters = 63
    status, _, outdir, output = train(tmp, "deterministic", "--deterministic", "--device", "cuda",
                                      "--max-iters", str(iters), dataroot=data)
    devices.configure_determinism(True, torch.device("cuda"))
    expected = [list(row) for row in bench.tutorial_reference().run_tutorial(data, iters, workers=2, device="cuda")[0]]
    got = metrics(outdir) if status == 0 else []
    equal = sum(a == b for a, b in zip(got, expected))
    first = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), None)
    results.check(equal == iters, "--deterministic on CUDA prints the tutorial's numbers",
           f"{equal} of {iters} rows identical"
           + ("" if first is None else f"; first difference at iteration {first}: "
              f"{got[first]} vs {expected[first]}"))


def check_resume(results, tmp, data):
    flags = ["--deterministic", "--device", "cuda", "--num-epochs", "2"]
    train(tmp, "parts", *flags, "--max-iters", "70", dataroot=data)
    status, _, parts, _ = train(tmp, "parts", "--resume", dataroot=data)
    train(tmp, "whole", *flags, dataroot=data)
    whole = os.path.join(tmp, "whole")
    differ = same_weights(whole, parts) if status == 0 else ["(resume failed)"]
    rows_equal = status == 0 and metrics(whole) == metrics(parts)
    results.check(not differ and rows_equal, "--deterministic resume on CUDA equals the run done in one go",
           f"{len(metrics(whole))} iterations, metrics {'identical' if rows_equal else 'differ'}, "
           f"{len(differ)} weight tensors differ{': ' + ', '.join(differ[:3]) if differ else ''}")


def check_flags(results, tmp, data):
    for flags in FLAG_SETS:
        status, seconds, outdir, output = train(tmp, "flags" + "".join(flags).replace(" ", ""),
                                                "--device", "cuda", "--max-iters", "20", *flags,
                                                dataroot=data)
        ok = status == 0 and len(metrics(outdir)) == 20
        results.check(ok, f"{' '.join(flags) or 'default'} runs 20 iterations",
               f"{seconds:.1f} s with start-up" + ("" if ok else f"; {output.strip()[-300:]}"))
    # The combination that crashed under torch 2.11, without the fallback: still broken here?
    args = cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args(["--amp", "--compile", "--channels-last"])
    process = devices.Process(device=torch.device("cuda", 0))
    try:
        netG, netD = dcgan.build_models(args, process.device)
        state = dcgan.loss_and_optimizers(args, netG, netD, process.device, logits=True)
        state.wrappedG = devices.prepare_for_training(netG, args, process)
        state.wrappedD = devices.prepare_for_training(netD, args, process, logits=True)
        real = torch.randn(128, 3, 64, 64, device=process.device).contiguous(
            memory_format=torch.channels_last)
        for _ in range(3):
            dcgan.train_step(state, real)
        torch.cuda.synchronize()
        results.info("--amp --compile --channels-last without the fallback",
                     "works on this torch: the fallback can go")
    except Exception as error:  # noqa: BLE001 - what broke is the finding
        results.info("--amp --compile --channels-last without the fallback",
                     f"still fails on this torch ({type(error).__name__}): keep the fallback")


def check_bench(results, tmp, data):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "--device", "cuda",
                           "--iters", "30"], capture_output=True, text=True, cwd=ROOT)
    print(done.stdout, flush=True)
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| path")}
    speedup = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    results.check(done.returncode == 0 and "default" in rows and "tutorial" in rows,
           "bench.py on CUDA", speedup or done.stderr[-300:])


def check_celeba(results, tmp, data):
    """The tutorial's 5-epoch run on a folder of CelebA's size, timed."""
    folder = os.path.join(tmp, "celeba-sized", "img_align_celeba")
    os.makedirs(folder)
    sources = sorted(os.listdir(os.path.join(data, "img_align_celeba")))
    for k in range(202_599):
        os.symlink(os.path.join(data, "img_align_celeba", sources[k % len(sources)]),
                   os.path.join(folder, f"{k + 1:06d}.jpg"))
    for flags in ([], ["--amp"]):
        status, seconds, outdir, output = train(tmp, "celeba" + "".join(flags), "--device", "cuda",
                                                "--workers", "16", *flags,
                                                dataroot=os.path.dirname(folder))
        rows = len(metrics(outdir)) if status == 0 else 0
        results.check(status == 0 and rows == 7915, f"5 epochs on 202,599 images {' '.join(flags)}",
               f"{seconds:.1f} s wall clock (cache build included), {rows} iterations, "
               f"{rows * 128 / seconds:,.0f} images/s overall")


def check_adam(results, tmp, data):
    device = torch.device("cuda", 0)
    times, weights = {}, {}
    for kind in ("foreach", "fused"):
        torch.manual_seed(0)
        netG, netD = dcgan.build_models(cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args([]), device)
        params = list(netG.parameters()) + list(netD.parameters())
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer = torch.optim.Adam(params, lr=0.0002, betas=(0.5, 0.999), **{kind: True})
        for _ in range(10):
            optimizer.step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(200):
            optimizer.step()
        torch.cuda.synchronize()
        times[kind] = (time.perf_counter() - start) / 200 * 1e6
        weights[kind] = torch.cat([p.detach().flatten() for p in params])
    gap = (weights["fused"] - weights["foreach"]).abs().max().item()
    results.check(gap < 1e-5, "fused and foreach Adam agree after 210 steps (one step of G and D together)",
                  f"largest difference {gap:.2e}; foreach {times['foreach']:.0f} us, "
                  f"fused {times['fused']:.0f} us")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        for name in args.only:
            print(f"{name}: no CUDA device")
        return 0
    results = Results()
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run_checks(results, args.only, tmp, bench.make_random_jpegs(os.path.join(tmp, "data"), 8000))
    return results.status()


def run_checks(results, names, tmp, data):
    """Runs the named checks in order; one that crashes is a failed check, and the rest run."""
    for name in names:
        start = time.perf_counter()
        try:
            globals()[f"check_{name}"](results, tmp, data)
        except Exception as error:  # noqa: BLE001 - a check that crashed has failed
            results.check(False, name, f"crashed: {type(error).__name__}: {error}")
        print(f"  ({name}: {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
