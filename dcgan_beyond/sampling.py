"""The generate and evaluate commands: images and measurements from a trained generator."""
import argparse
import math
import os

import torch
import torchvision.utils as vutils

from .checkpoints import generator_from_checkpoint
from .data import load_pixel_cache, open_eval_images
from .devices import pick_device
from .fidelity import evaluators, measure_all
from .files import save_grid, writable_folder
from .metrics import generated_uint8


def slerp(a, b, t):
    """Spherical interpolation between latent vectors a and b (rows), t in [0, 1]."""
    a_flat, b_flat = a.flatten(1), b.flatten(1)
    cos = (a_flat * b_flat).sum(1) / (a_flat.norm(dim=1) * b_flat.norm(dim=1))
    omega = torch.acos(cos.clamp(-1, 1))[:, None]
    sin = torch.sin(omega)
    safe = sin.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - t) * omega) / sin.where(safe, 1), 1 - t)
    wb = torch.where(safe, torch.sin(t * omega) / sin.where(safe, 1), t)
    return (wa * a_flat + wb * b_flat).view_as(a)


def generate(args, Generator):
    """The generate command: a grid (and single files) or a latent walk. Images are made
    and written --batch-size at a time, so memory does not grow with --num-samples."""
    device = pick_device(args.device)
    netG, _ = generator_from_checkpoint(args.checkpoint, device, Generator)
    outdir = args.outdir or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "samples")
    writable_folder("--outdir", outdir)
    generator = torch.Generator().manual_seed(args.seed)
    if args.interpolate:
        ends = torch.randn(2, args.rows, netG.nz, 1, 1, generator=generator)
        t = torch.linspace(0, 1, args.steps)
        noise = torch.stack([slerp(ends[0], ends[1], float(s)) for s in t], dim=1).flatten(0, 1)
        images = generated_uint8(netG, noise.to(device), args.batch_size)
        path = os.path.join(outdir, "interpolation.png")
        save_grid(vutils.make_grid(images, nrow=args.steps, padding=2), path)
        print(f"Wrote {path}: {args.rows} latent walks of {args.steps} steps")
        return 0
    shown = []  # the grid shows the first 256
    for start in range(0, args.num_samples, args.batch_size):
        count = min(args.batch_size, args.num_samples - start)
        noise = torch.randn(count, netG.nz, 1, 1, generator=generator)
        images = generated_uint8(netG, noise.to(device), args.batch_size)
        shown += list(images[:256 - len(shown)])
        if args.single_files:
            for k, image in enumerate(images, start):
                save_grid(image, os.path.join(outdir, f"{k:06d}.png"))
    path = os.path.join(outdir, "samples.png")
    save_grid(vutils.make_grid(shown, nrow=math.ceil(math.sqrt(len(shown))), padding=2), path)
    print(f"Wrote {path}" + (f" (the first 256 of {args.num_samples})"
                             if args.num_samples > 256 else ""))
    if args.single_files:
        print(f"Wrote {args.num_samples} single images to {outdir}/000000.png ...")
    return 0


def evaluate(args, tutorial):
    """The evaluate command: --metrics (SWD, FID, KID) of a finished model, as training
    computes them."""
    device = pick_device(args.device)
    netG, config = generator_from_checkpoint(args.checkpoint, device, tutorial.Generator)
    given = {k: getattr(args, k) for k in ("dataroot", "eval_dataroot", "eval_samples",
                                            "seed", "cache_dir") if getattr(args, k) is not None}
    # the flags given here, else the training run's, else training's defaults
    defaults = dict(dataroot=tutorial.inputs["dataroot"], eval_dataroot=None,
                    eval_samples=None, seed=tutorial.inputs["seed"], cache_dir=None)
    cfg = argparse.Namespace(**defaults)
    vars(cfg).update({k: v for k, v in config.items() if k in defaults}, **given)
    vars(cfg).update(workers=args.workers, nz=netG.nz, nc=netG.nc, image_size=netG.image_size,
                     metrics=args.metrics, fid_weights=args.fid_weights)
    images = tutorial.make_dataset(cfg.dataroot, cfg.image_size, cfg.nc)
    held_out = open_eval_images(cfg, images, tutorial.make_dataset)
    pixels = load_pixel_cache(images, cfg.image_size, cfg.nc, cfg.cache_dir, cfg.workers)
    row = measure_all(evaluators(images, pixels, held_out, cfg, device), netG, "final")
    if "swd_avg" in row:
        print(f"swd_avg {row['swd_avg']:.2f} (floor {row['floor_avg']:.2f})")
    for key in ("fid", "kid"):
        if key in row:
            print(f"{key} {row[key]:.4g} (floor {row['floor_' + key]:.4g})")
    return 0
