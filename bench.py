#!/usr/bin/env python3
"""Speed of dcgan.py beside the tutorial's own pipeline and loop, in one run.

    python bench.py --quick                       # 90 s on a quiet 2-core AMD EPYC (Zen 4); more under load
    python bench.py --dataroot data/celeba-8k --iters 30

Each configuration runs in a fresh process on the same images (random CelebA-sized JPEGs
made in a temporary folder, or --dataroot), warms up, then times --iters iterations:

  tutorial        the tutorial's code: ImageFolder + 2 DataLoader workers, its loop body
                  with five .item() syncs an iteration (tests/tutorial_reference.py)
  default         python dcgan.py: the decode-once cache, the sync-free step that skips
                  D's thrown-away gradients; the same numbers as the tutorial
  --no-cache      dcgan.py's step on the tutorial's pipeline (ImageFolder + workers)
  --channels-last, --compile, --amp, --deterministic (on CUDA only)
                  the opt-in flags, each on top of default (--amp: bf16 autocast on CUDA
                  or on a CPU with native bf16; elsewhere it falls back to the default)
  --fast          what --fast picks for the device; --fast --compile, the same with
                  torch.compile (its compile time is not in the timed iterations)

It prints a markdown table and, last, the default path's speed-up over the tutorial's.

    python bench.py --dataroot data/celeba-8k --memory 64 128

measures instead the decode-once cache on a folder of CelebA's size (202,599 links to the
files of --dataroot): the time to list the folder and digest its file list, then per size
the cache build's time, file size and peak anonymous memory (RssAnon, summed over the
process tree), and the same peak for a 20-iteration run on that cache with narrow networks,
alone and as 2 torchrun ranks. File pages, the mapped cache among them, are the shared page
cache: their peak is reported apart.
"""
import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from PIL import Image

import dcgan
from dcgan_beyond import cli, data, devices, techniques

CONFIGS = {
    "tutorial": [],
    "default": [],
    "--no-cache": ["--no-cache"],
    "--channels-last": ["--channels-last"],
    "--compile": ["--compile"],
    "--amp": ["--amp"],
    "--fast": ["--fast"],
    "--fast --compile": ["--fast", "--compile"],
    "--deterministic": ["--deterministic"],
}
CUDA_ONLY = ("--deterministic",)  # on the CPU: the default path again


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataroot", default=None,
                        help="images to use (default: random CelebA-sized JPEGs in a temporary folder)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=None,
                        help="timed iterations per configuration (default: 12, 6 with --quick; 50 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed iterations first (default: 2; 10 on CUDA)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations and configurations")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None,
                        type=lambda name: name if name in CONFIGS else f"--{name}",
                        help="configurations to run (default: all that apply to the device); "
                             "a flag's name may drop its dashes: --configs default fast")
    parser.add_argument("--memory", type=int, nargs="+", metavar="SIZE", default=None,
                        help="instead, measure the decode-once cache's memory at these image "
                             "sizes on a folder of CelebA's size (--images links to the files "
                             "of --dataroot)")
    parser.add_argument("--images", type=int, default=202_599,
                        help="with --memory: how many images the folder of links holds")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    return parser


def make_random_jpegs(folder, count, seed=0):
    """count random 178x218 JPEGs (the size of aligned CelebA) in the tutorial's layout."""
    images = os.path.join(folder, "img_align_celeba")
    os.makedirs(images, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(count):
        # smooth noise compresses and decodes like a photograph, unlike white noise
        coarse = rng.integers(0, 256, (28, 23, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((178, 218), Image.BILINEAR)
        image.save(os.path.join(images, f"{k + 1:06d}.jpg"), quality=90)
    return folder


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_config(batch_size, flags):
    return cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args(["--batch-size", str(batch_size), *flags])


def tutorial_reference():
    """tests/tutorial_reference.py, the tutorial's own code (the suite's specification),
    loaded from its file: torch-fidelity installs a top-level package named "tests" of its
    own, which an import by name could find first."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests", "tutorial_reference.py")
    spec = importlib.util.spec_from_file_location("tutorial_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tutorial_worker(args, device):
    """The tutorial's pipeline and loop body, timed."""
    reference = tutorial_reference()
    torch.manual_seed(999)
    dataloader = reference.tutorial_dataloader(args.dataroot, 64, args.batch_size, workers=2)
    Generator, Discriminator, weights_init = reference.tutorial_models(100, 64, 64)
    netG, netD = Generator(1).to(device), Discriminator(1).to(device)
    netG.apply(weights_init)
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))

    def batches():
        while True:  # epochs, each a new iterator (new shuffle, new workers), as the tutorial
            for data in dataloader:
                yield data

    def step(data):
        reference.tutorial_step(netG, netD, optimizerG, optimizerD, criterion, data, 100, device)

    def pipeline(data):
        data[0].to(device)
    return batches(), step, pipeline


def dcgan_worker(args, device, flags):
    """dcgan.py's data source and step, with the flags of one configuration."""
    process = devices.Process(device=device)
    config = cli.resolve_settings(model_config(args.batch_size, flags), process)  # as train() does
    devices.configure_determinism(config.deterministic, device)  # as setup_distributed() does
    if device.type == "cpu":
        devices.keep_freed_memory()
    torch.manual_seed(999)
    images = dcgan.make_dataset(args.dataroot, 64, 3)
    pixels = None if config.no_cache else data.load_pixel_cache(
        images, 64, 3, args.cache_dir, workers=2)
    source = data.Batches(images, pixels, args.batch_size, 2, process,
                           channels_last=config.channels_last)
    netG, netD = dcgan.build_models(config, device)
    logits = techniques.d_returns_logits(config)  # resolved: --amp only where bf16 autocast is supported
    state = dcgan.loss_and_optimizers(config, netG, netD, device, logits)
    state.wrappedG = devices.prepare_for_training(netG, config, process)
    state.wrappedD = devices.prepare_for_training(netD, config, process, logits=logits)
    pending = []

    def batches():
        epoch = 0
        while True:
            yield from source.epoch(epoch)
            epoch += 1

    def step(real):
        pending.append(dcgan.train_step(state, real))
        if len(pending) == 50:  # the training loop's flush: one sync per 50 iterations
            torch.stack(pending).tolist()
            pending.clear()

    def pipeline(real):
        pass
    return batches(), step, pipeline


def run_worker(args):
    """One configuration in this process; prints its measurements as JSON."""
    device = devices.pick_device(args.device)
    if args.worker == "tutorial":  # the tutorial leaves torch's defaults: no cuDNN autotuning
        batches, step, pipeline = tutorial_worker(args, device)
    else:
        batches, step, pipeline = dcgan_worker(args, device, CONFIGS[args.worker])
    warm_start = time.perf_counter()
    for _ in range(args.warmup):
        step(next(batches))
    synchronize(device)
    warmup_s = time.perf_counter() - warm_start  # torch.compile's compile time is in here
    waiting, start = 0.0, time.perf_counter()
    for _ in range(args.iters):
        before = time.perf_counter()
        data = next(batches)
        waiting += time.perf_counter() - before
        step(data)
    synchronize(device)
    elapsed = time.perf_counter() - start
    # the input pipeline alone, over as many batches
    synchronize(device)
    pipe_start = time.perf_counter()
    for _ in range(args.iters):
        pipeline(next(batches))
    synchronize(device)
    pipe_elapsed = time.perf_counter() - pipe_start
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"images_per_s": args.iters * args.batch_size / elapsed, "warmup_s": warmup_s,
                      "wait_share": waiting / elapsed,
                      "pipeline_images_per_s": args.iters * args.batch_size / pipe_elapsed,
                      "peak_bytes": peak}))


def step_gflop(batch_size, device):
    """FLOPs of one default iteration (useful work: what dcgan.py's step computes)."""
    from torch.utils.flop_counter import FlopCounterMode
    config = model_config(batch_size, [])
    netG, netD = dcgan.build_models(config, device)
    state = dcgan.loss_and_optimizers(config, netG, netD, device)
    real = torch.randn(batch_size, 3, 64, 64, device=device)
    with FlopCounterMode(display=False) as counter:
        dcgan.train_step(state, real)
    return counter.get_total_flops() / 1e9


def matmul_gflops(device, size=2048, repeats=10):
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def process_tree_memory(root_pid):
    """(RssAnon, RssFile) in bytes, summed over root_pid and every process below it:
    anonymous memory is a process's own; file pages (the mapped cache) are the shared,
    reclaimable page cache."""
    parents, status = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{name}/status") as f:
                    status[int(name)] = f.read()
            except OSError:  # it ended meanwhile
                pass
    tree, grew = {root_pid}, True
    while grew:
        new = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= new
        grew = bool(new)
    total = [0, 0]
    for pid in tree & status.keys():
        for line in status[pid].splitlines():
            for k, key in enumerate(("RssAnon:", "RssFile:")):
                if line.startswith(key):
                    total[k] += int(line.split()[1]) * 1024
    return tuple(total)


def peak_memory(command, env=None):
    """Runs command; returns (seconds, peak RssAnon, peak RssFile over its process tree)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0, 0]
    while process.poll() is None:
        anon, file = process_tree_memory(process.pid)
        peak = [max(peak[0], anon), max(peak[1], file)]
        time.sleep(0.05)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ...: failed\n{process.stderr.read()[-2000:]}")
    return time.perf_counter() - start, peak[0], peak[1]


def memory_report(args):
    """The cache's build and use on a folder of CelebA's size, in bytes of memory."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(args.dataroot, "img_align_celeba")
        files = sorted(os.listdir(source))
        folder = os.path.join(tmp, "celeba", "img_align_celeba")
        os.makedirs(folder)
        for k in range(args.images):
            os.symlink(os.path.join(source, files[k % len(files)]), os.path.join(folder, f"{k + 1:06d}.jpg"))
        dataroot = os.path.dirname(folder)
        start = time.perf_counter()
        images = dcgan.make_dataset(dataroot, 64, 3)
        listed = time.perf_counter() - start
        start = time.perf_counter()
        data.file_digest(images)
        print(f"{len(images):,} images: listed in {listed:.1f} s, file digest (names, sizes, "
              f"times) in {time.perf_counter() - start:.1f} s\n")
        gib = 2 ** 30
        print("| size | cache build | cache file | build: RssAnon peak | run: RssAnon peak "
              "| 2 ranks: RssAnon peak | RssFile peak (shared page cache) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)),
                   OMP_NUM_THREADS="1")
        here = os.path.dirname(os.path.abspath(__file__))
        for size in args.memory:
            cache = os.path.join(tmp, f"cache{size}")
            build = [sys.executable, "-c", "import sys, dcgan; from dcgan_beyond import data; images = dcgan.make_dataset(sys.argv[1], "
                     "int(sys.argv[2]), 3); data.load_pixel_cache(images, int(sys.argv[2]), 3, "
                     "sys.argv[3], workers=2)", dataroot, str(size), cache]
            seconds, build_anon, _ = peak_memory(build, env)
            cache_bytes = sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache)
                              if f.endswith(".npy"))
            train = ["--dataroot", dataroot, "--image-size", str(size), "--cache-dir", cache,
                     "--max-iters", "20", "--ngf", "8", "--ndf", "8", "--workers", "2"]
            _, run_anon, run_file = peak_memory(
                [sys.executable, os.path.join(here, "dcgan.py"), *train, "--outdir",
                 os.path.join(tmp, f"run{size}")], env)
            _, ddp_anon, ddp_file = peak_memory(
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                 os.path.join(here, "dcgan.py"), *train, "--outdir", os.path.join(tmp, f"ddp{size}")], env)
            print(f"| {size} px | {seconds:.0f} s | {cache_bytes / gib:.2f} GiB | {build_anon / gib:.2f} GiB "
                  f"| {run_anon / gib:.2f} GiB | {ddp_anon / gib:.2f} GiB "
                  f"| {run_file / gib:.2f} / {ddp_file / gib:.2f} GiB |", flush=True)


def main():
    args = get_args_parser().parse_args()
    if args.memory:
        return memory_report(args)
    device = devices.pick_device(args.device)
    cuda = device.type == "cuda"
    if args.iters is None:
        args.iters = 50 if cuda else (6 if args.quick else 12)
    if args.warmup is None:
        args.warmup = 10 if cuda else 2
    if args.worker:
        return run_worker(args)
    configs = args.configs or [c for c in CONFIGS if (cuda or c not in CUDA_ONLY)
                               and not (args.quick and ("--compile" in c or c == "--no-cache"))]
    with tempfile.TemporaryDirectory() as tmp:
        args.cache_dir = os.path.join(tmp, "cache")
        if args.dataroot is None:
            # enough images that the timed iterations and the pipeline pass stay in one epoch
            count = args.batch_size * (args.warmup + 2 * args.iters + 1)
            start = time.perf_counter()
            args.dataroot = make_random_jpegs(os.path.join(tmp, "data"), count)
            print(f"made {count} random 178x218 JPEGs in {time.perf_counter() - start:.0f} s")
        images = dcgan.make_dataset(args.dataroot, 64, 3)
        start = time.perf_counter()
        pixels = data.load_pixel_cache(images, 64, 3, args.cache_dir, workers=2)
        cache_seconds = time.perf_counter() - start
        cache_bytes = pixels.numel()
        del pixels
        gflop = step_gflop(args.batch_size, device)
        matmul = matmul_gflops(device)
        print(f"device: {device} ({torch.cuda.get_device_name(device) if cuda else os.cpu_count()} "
              f"{'' if cuda else 'CPU cores'}), torch {torch.__version__}, batch {args.batch_size}, "
              f"{args.warmup} warm-up + {args.iters} timed iterations per row")
        print(f"decode-once cache: {len(images)} images in {cache_seconds:.1f} s "
              f"({len(images) / cache_seconds:.0f} images/s), {cache_bytes / 2**20:.0f} MiB")
        print(f"one iteration: {gflop:.1f} GFLOP; fp32 matmul here: {matmul:.0f} GFLOP/s")
        chosen, judged = devices.fast_settings(device)
        print(f"native bf16 (oneDNN's check): {'yes' if devices.amp_supported(device) else 'no'}; "
              f"--fast here ({judged}): {' '.join('--' + f.replace('_', '-') for f in chosen)}\n")
        results = {}
        for name in configs:
            command = [sys.executable, os.path.abspath(__file__), f"--worker={name}",
                       "--dataroot", args.dataroot, "--cache-dir", args.cache_dir,
                       "--device", str(device), "--batch-size", str(args.batch_size),
                       "--iters", str(args.iters), "--warmup", str(args.warmup)]
            done = subprocess.run(command, capture_output=True, text=True,
                                  cwd=os.path.dirname(os.path.abspath(__file__)))
            if done.returncode != 0:
                print(f"{name}: failed\n{done.stderr[-2000:]}")
                continue
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {name}: {results[name]['images_per_s']:.1f} images/s (warm-up "
                  f"{results[name]['warmup_s']:.0f} s)", flush=True)
    base = results.get("tutorial", {}).get("images_per_s")
    memory = "peak GPU memory" if cuda else "peak RSS"
    print(f"\n| path | images/s | vs tutorial | waiting for data | input pipeline alone, images/s "
          f"| GFLOP/s (of {matmul:.0f} matmul) | {memory} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        ratio = f"{r['images_per_s'] / base:.2f}x" if base else "-"
        achieved = gflop * r["images_per_s"] / args.batch_size
        print(f"| {name} | {r['images_per_s']:.1f} | {ratio} | {100 * r['wait_share']:.0f}% "
              f"| {r['pipeline_images_per_s']:,.0f} | {achieved:.0f} ({100 * achieved / matmul:.0f}%) "
              f"| {r['peak_bytes'] / 2**30:.2f} GiB |")
    if base and "default" in results:
        print(f"\ndefault path: {results['default']['images_per_s'] / base:.2f}x the tutorial's images/s")
    if base and "--fast" in results:
        print(f"--fast: {results['--fast']['images_per_s'] / base:.2f}x the tutorial's images/s")


if __name__ == "__main__":
    main()
