"""Metrics: the statistics of every iteration (metrics.csv, TensorBoard) and the sliced
Wasserstein distance (Karras et al., 2018, Progressive GAN) of G's images to real ones."""
import dataclasses
import math
import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .data import image_count, real_uint8
from .files import atomic_write, csv_text
from .stopping import Diverged


METRICS_COLUMNS = ["epoch", "iteration", "Loss_D", "Loss_G", "D_x", "D_G_z1", "D_G_z2", "seconds"]


class Metrics:
    """The per-iteration statistics (the tutorial's G_losses and D_losses, and the rest of
    its stats line). They stay on the device until flush(), which brings a block to the
    host with one synchronisation, checks it is finite, and appends it to metrics.csv
    (when this process writes)."""

    def __init__(self, path, rows=(), write=True):
        self.path, self.write = path, write
        self.rows = [list(row) for row in rows]
        self.pending = []
        self.read = len(self.rows)  # rows that unread() has handed out
        if write:  # rewrite from the checkpoint's rows: a resumed run drops later ones
            atomic_write(path, lambda f: f.write(csv_text([METRICS_COLUMNS] + self.rows).encode()))

    @property
    def G_losses(self):
        return [row[3] for row in self.rows]

    @property
    def D_losses(self):
        return [row[2] for row in self.rows]

    def record(self, epoch, iteration, stats, seconds):
        self.pending.append((epoch, iteration, stats, seconds))

    def unread(self):
        """Flushes; returns the rows not returned by an earlier call (a checkpoint's flush
        brings rows to the host too)."""
        self.flush()
        rows, self.read = self.rows[self.read:], len(self.rows)
        return rows

    def flush(self):
        """Returns the new rows; raises Diverged at the first non-finite one."""
        if not self.pending:
            return []
        values = torch.stack([stats for _, _, stats, _ in self.pending]).tolist()
        new = [[epoch, iteration, *v, round(seconds, 3)]
               for (epoch, iteration, _, seconds), v in zip(self.pending, values)]
        self.pending = []
        for row in new:
            if not all(math.isfinite(x) for x in row[2:7]):
                raise Diverged(row[1])
        self.rows += new
        if self.write:
            with open(self.path, "a", newline="") as f:
                f.write(csv_text(new))
        return new


def _binomial_kernel(channels, scale, device):
    k = torch.tensor([1., 4., 6., 4., 1.], device=device)
    return (torch.outer(k, k) / 256 * scale).expand(channels, 1, 5, 5)


def _blur(x, kernel):
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def laplacian_pyramid(images, levels):
    """[band at full size, band at half size, ..., low-pass image at the smallest size]."""
    down_kernel = _binomial_kernel(images.shape[1], 1, images.device)
    up_kernel = _binomial_kernel(images.shape[1], 4, images.device)
    pyramid = [images]
    for _ in range(levels - 1):
        small = _blur(pyramid[-1], down_kernel)[..., ::2, ::2]
        up = torch.zeros_like(pyramid[-1])
        up[..., ::2, ::2] = small
        pyramid[-1] = pyramid[-1] - _blur(up, up_kernel)
        pyramid.append(small)
    return pyramid


def _patches(images, positions, patch_size):
    """The patch_size x patch_size patches around positions (image, y, x), flattened."""
    half = patch_size // 2
    offsets = torch.arange(-half, half + 1, device=images.device)
    n, c, h, w = images.shape
    img, y, x = (p.to(images.device) for p in positions)
    index = (((img[:, None, None, None] * c + torch.arange(c, device=images.device)[None, :, None, None])
              * h + (y[:, None, None, None] + offsets[None, None, :, None]))
             * w + (x[:, None, None, None] + offsets[None, None, None, :]))
    return images.reshape(-1)[index.reshape(len(img), -1)]


def _standardise(descriptors, channels):
    """Each colour channel to zero mean and unit standard deviation over all patches."""
    d = descriptors.view(len(descriptors), channels, -1)
    mean = d.mean(dim=(0, 2), keepdim=True)
    std = d.std(dim=(0, 2), keepdim=True, unbiased=False)
    return ((d - mean) / std).view(len(descriptors), -1)


def sort_rows(x):
    """Each row sorted. On the CPU numpy's vectorised sort gives the same result 3x faster."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.contiguous().numpy(), axis=1))
    return torch.sort(x, dim=1).values


def sliced_wasserstein(a, b, generator, directions=128, repeats=4):
    """Mean over repeats of the mean |sorted projection of a - sorted projection of b|
    over `directions` random unit directions."""
    results = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=generator).to(a.device)
        dirs /= dirs.norm(dim=0, keepdim=True)
        proj_a, proj_b = sort_rows((a @ dirs).T), sort_rows((b @ dirs).T)
        results.append((proj_a - proj_b).abs().mean().item())
    return sum(results) / repeats


def swd(real, fake, seed=0, patches_per_image=128, patch_size=7, directions=128,
        repeats=4, min_size=16):
    """Multi-scale sliced Wasserstein distance between two equal-size sets of uint8
    images (N x C x H x W), as in Progressive GAN: per Laplacian-pyramid level from the
    full size down to min_size, 128 random 7x7 patches per image, standardised per colour
    channel and set, compared along 4 x 128 random directions. Returns the distances x1e3,
    one per level (largest first), and their mean under "avg". The same seed gives the same
    numbers, and a set against itself scores 0."""
    if real.shape != fake.shape:
        raise ValueError(f"SWD needs two sets of the same shape, not {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    generator = torch.Generator().manual_seed(seed)
    levels = int(math.log2(real.shape[-1] // min_size)) + 1
    result = {}
    pyramids = [laplacian_pyramid(s.float(), levels) for s in (real, fake)]
    for level_real, level_fake in zip(*pyramids):
        n, c, size, _ = level_real.shape
        half = patch_size // 2
        count = n * patches_per_image
        positions = (torch.arange(count) // patches_per_image,
                     torch.randint(half, size - half, (count,), generator=generator),
                     torch.randint(half, size - half, (count,), generator=generator))
        a = _standardise(_patches(level_real, positions, patch_size), c)
        b = _standardise(_patches(level_fake, positions, patch_size), c)
        result[size] = 1e3 * sliced_wasserstein(a, b, generator, directions, repeats)
    result["avg"] = sum(result.values()) / len(result)
    return result


def generated_uint8(netG, noise, batch_size=500):
    """G's images for the noise as uint8 (G(z) * 127.5 + 127.5, rounded and clamped).
    G runs in eval mode: each image depends on its own z alone, not on its batch."""
    was_training = netG.training
    netG.eval()
    try:
        with torch.no_grad():
            out = [(netG(chunk).float() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8).cpu()
                   for chunk in noise.split(batch_size)]
    finally:
        netG.train(was_training)
    return torch.cat(out)


EVAL_SAMPLES = 2000  # generated and real images per SWD evaluation (--eval-samples)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What an evaluation needs, the same in training (--eval-*) and in the evaluate
    command. samples None: each metric's default."""
    metrics: tuple = ("swd",)
    samples: Optional[int] = None
    seed: int = 999
    nz: int = 100
    image_size: int = 64
    nc: int = 3
    workers: int = 2
    cache_dir: Optional[str] = None
    no_cache: bool = False
    fid_weights: Optional[str] = None

    @classmethod
    def of_training(cls, args):
        return cls(tuple(args.eval_metrics.split(",")), args.eval_samples, args.seed, args.nz,
                   args.image_size, args.nc, args.workers, args.cache_dir, args.no_cache,
                   args.fid_weights)


class SWDEvaluator:
    """SWD of G's images against a fixed set of real ones (held-out, or training images),
    beside the real-vs-real floor (a disjoint set of training images against the same set).
    It draws from generators of its own: evaluation changes no training number."""

    def __init__(self, images, pixels, held_out, settings, device, log=print):
        self.device, self.seed, self.log = device, settings.seed, log
        def seeded():  # a generator of its own: evaluation draws nothing from training's
            return torch.Generator().manual_seed(settings.seed)
        order = torch.randperm(image_count(images, pixels), generator=seeded())
        if held_out is not None:
            n = min(settings.samples or EVAL_SAMPLES, len(held_out), len(order))
            held_order = torch.randperm(len(held_out), generator=seeded())
            self.real = real_uint8(held_out, None, held_order[:n].tolist(), settings.workers)
            other = real_uint8(images, pixels, order[:len(self.real)].tolist(), settings.workers)
        else:
            n = min(settings.samples or EVAL_SAMPLES, len(order) // 2)
            self.real = real_uint8(images, pixels, order[:n].tolist(), settings.workers)
            other = real_uint8(images, pixels, order[n:2 * n].tolist(), settings.workers)
        n = min(len(self.real), len(other))
        self.real, other = self.real[:n], other[:n]
        self.noise = torch.randn(n, settings.nz, 1, 1, generator=seeded())
        self.floor = swd(self.real.to(device), other.to(device), seed=settings.seed)
        log(f"SWD x1e3 floor (real vs real, {n} vs {n} images): {format_swd(self.floor)}")

    def measure(self, netG, iteration):
        """The eval.csv row of G at this iteration: SWD per level, and the floor."""
        fake = generated_uint8(netG, self.noise.to(self.device))
        result = swd(self.real.to(self.device), fake.to(self.device), seed=self.seed)
        self.log(f"[iteration {iteration}] SWD x1e3: {format_swd(result)} "
                 f"(floor {self.floor['avg']:.2f})")
        row = {"iteration": iteration}
        row.update({f"swd_{k}": v for k, v in result.items()})
        row.update({f"floor_{k}": v for k, v in self.floor.items()})
        return row


def format_swd(result):
    return ", ".join(f"{k}: {v:.2f}" for k, v in result.items())


def write_eval_csv(path, evals):
    """eval.csv: a row per evaluation; a metric a row lacks (added on resume) is blank."""
    columns = list(dict.fromkeys(key for e in evals for key in e))
    if evals:
        atomic_write(path, lambda f: f.write(csv_text(
            [columns] + [[e.get(c, "") for c in columns] for e in evals]).encode()))


EVAL_CURVES = (  # eval.csv column, its floor, the figure's title and file
    ("swd_avg", "floor_avg", "Sliced Wasserstein distance to real images (x1e3, lower is better)", "swd.png"),
    ("fid", "floor_fid", "FID to real images (lower is better)", "fid.png"))


def save_eval_curves(evals, outdir, new_figure):
    """swd.png and fid.png: each measured metric over the run, beside its floor, drawn
    on dcgan.py's new_figure."""
    for key, floor, title, name in EVAL_CURVES:
        points = [(e["iteration"], e[key]) for e in evals if e.get(key, "") != ""]
        if not points:
            continue
        fig = new_figure((10, 5))
        ax = fig.add_subplot()
        ax.set_title(title)
        ax.plot(*zip(*points), marker="o", label="G vs real")
        ax.axhline(evals[-1][floor], color="gray", linestyle="--", label="real vs real (floor)")
        ax.set_xlabel("iterations")
        ax.set_yscale("log")
        ax.legend()
        fig.savefig(os.path.join(outdir, name), bbox_inches="tight")
