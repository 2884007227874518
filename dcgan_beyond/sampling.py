"""The generate and evaluate commands: images and measurements from a trained generator."""
import math
import os

import torch
import torchvision.utils as vutils

from .checkpoints import generator_from_checkpoint
from .data import load_pixel_cache, open_eval_images, open_images, pixel_transform
from .devices import pick_device
from .fidelity import evaluators, inception_weights, measure_all, needs_inception
from .files import save_grid, writable_folder
from .metrics import EvalSettings, generated_uint8
from .sharing import generator_from_hub, is_hub_path



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


def load_generator(path, device, Generator):
    """(G, the run's configuration) from checkpoint.pt, netG.pt or hf://OWNER/NAME[@REV]."""
    if is_hub_path(path):
        return generator_from_hub(path, device, Generator)
    return generator_from_checkpoint(path, device, Generator)


def generate(args, Generator):
    """The generate command: a grid (and single files) or a latent walk. Images are made
    and written --batch-size at a time, so memory does not grow with --num-samples."""
    device = pick_device(args.device)
    netG, _ = load_generator(args.checkpoint, device, Generator)
    outdir = args.outdir or ("samples" if is_hub_path(args.checkpoint) else os.path.join(
        os.path.dirname(os.path.abspath(args.checkpoint)), "samples"))
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


def evaluation_settings(args, config, netG, inputs):
    """evaluate's settings: each flag given here, else the training run's (config), else
    the tutorial's `inputs`; the image's shape is the generator's."""
    def chosen(given, name, default=None):
        return given if given is not None else config.get(name, default)
    return EvalSettings(metrics=tuple(args.metrics.split(",")),
                        samples=chosen(args.eval_samples, "eval_samples"),
                        seed=chosen(args.seed, "seed", inputs["seed"]), nz=netG.nz,
                        image_size=netG.image_size, nc=netG.nc, workers=args.workers,
                        cache_dir=chosen(args.cache_dir, "cache_dir"),
                        fid_weights=args.fid_weights)


def evaluate(args, Generator, inputs):
    """The evaluate command: --metrics (SWD, FID, KID) of a finished model, as training
    computes them. `inputs`: the tutorial's, for a bare netG.pt that has no configuration.
    The Inception weights are checked before any image is read."""
    device = pick_device(args.device)
    netG, config = load_generator(args.checkpoint, device, Generator)
    settings = evaluation_settings(args, config, netG, inputs)
    if needs_inception(settings.metrics):
        inception_weights(settings.fid_weights)
    transform = pixel_transform(settings.image_size)
    images = open_images(args.dataroot or config.get("dataroot", inputs["dataroot"]), transform,
                         settings.nc)
    eval_dataroot = args.eval_dataroot or config.get("eval_dataroot")
    held_out = open_eval_images(eval_dataroot, images)
    pixels = load_pixel_cache(images, settings.image_size, settings.nc, settings.cache_dir,
                              settings.workers)
    row = measure_all(evaluators(images, pixels, held_out, settings, device), netG, "final")
    if "swd_avg" in row:
        print(f"swd_avg {row['swd_avg']:.2f} (floor {row['floor_avg']:.2f})")
    for key in ("fid", "kid"):
        if key in row:
            print(f"{key} {row[key]:.4g} (floor {row['floor_' + key]:.4g})")
    return 0
