#!/usr/bin/env python3
"""DCGAN faces: the PyTorch "DCGAN faces" tutorial as one training program.

    python dcgan.py --dataroot data/celeba                    # train, step for step as the tutorial
    python dcgan.py --dataroot data/celeba --resume           # continue an interrupted run exactly
    python dcgan.py generate --checkpoint outputs/checkpoint.pt
    python dcgan.py evaluate --checkpoint outputs/checkpoint.pt
    torchrun --nproc_per_node 4 dcgan.py --dataroot data/celeba

With default flags it builds the tutorial's models, draws the tutorial's random numbers in
the tutorial's order and prints the tutorial's statistics lines.

Part I is the tutorial, in its order: inputs, data, weights_init, Generator, Discriminator,
loss and optimizers, the training loop, the results, and `train()`, the whole program.
Part II, after the marked line, is what a training program adds; each of those features
appears in part I as one call at a marked place ("beyond:").

Where this file names a thing of the tutorial differently:

    tutorial                      here
    manualSeed                    --seed (args.seed)
    dataset                       images (FaceImages, an ImageFolder)
    dataloader                    dataloader (Batches: the same shuffle, from a decode-once cache)
    data (a list [images, labels]) data: the images, already normalised and on the device
    real_cpu                      data
    iters                         iters (and state.iteration, the next one)
    real_label, fake_label        REAL_LABEL, FAKE_LABEL
    img_list                      state.img_list (and state.img_iterations, when each was made)
    G_losses, D_losses            state.metrics.G_losses, .D_losses (and metrics.csv)
    plt.figure, plt.savefig       new_figure, fig.savefig (no pyplot: no display needed)
"""
import argparse
import contextlib
import copy
import csv
import ctypes
import dataclasses
import datetime
import errno
import functools
import glob
import hashlib
import importlib.util
import io
import json
import math
import os
import pickle
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Callable, Optional

try:
    import fcntl  # file locks: POSIX only
except ImportError:
    fcntl = None

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torch.utils.data
import torch_fidelity
import torchvision.datasets as dset
import torchvision.transforms as transforms
import torchvision.utils as vutils
from PIL import Image
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm


class UserError(Exception):
    """A problem the user can fix: main() prints it as one line and exits with status 2.
    Under torchrun only rank 0 prints it, unless it concerns one rank alone."""

    def __init__(self, message, same_on_every_rank=True):
        super().__init__(message)
        self.same_on_every_rank = same_on_every_rank


# ========================================================================================
# Part I: the tutorial
# ========================================================================================

# ----------------------------------------------------------------------------------------
# Inputs (each is a flag of the same name: --dataroot, --batch-size, ...)
# ----------------------------------------------------------------------------------------

TUTORIAL_INPUTS = dict(
    dataroot="data/celeba",  # Root directory for dataset
    workers=2,  # Number of workers for dataloader
    batch_size=128,  # Batch size during training
    image_size=64,  # Spatial size of training images (resized and cropped to it)
    nc=3,  # Number of channels in the training images. For color images this is 3
    nz=100,  # Size of z latent vector (i.e. size of generator input)
    ngf=64,  # Size of feature maps in generator
    ndf=64,  # Size of feature maps in discriminator
    num_epochs=5,  # Number of training epochs
    lr=0.0002,  # Learning rate for optimizers
    beta1=0.5,  # Beta1 hyperparameter for Adam optimizers
    ngpu=1,  # Number of GPUs available. Use 0 for CPU mode.
    seed=999,  # manualSeed: set random seed for reproducibility
)


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------

class FaceImages(dset.ImageFolder):
    """The tutorial's ImageFolder and transform, with three additions: a flat folder of
    images works too, images are converted to `nc` channels, and an unreadable image
    yields None (reported on stderr) instead of ending a ten-hour run."""

    def __init__(self, root, image_size=64, nc=3):
        self.is_flat = any(entry.is_file() and dset.folder.has_file_allowed_extension(
            entry.name, dset.folder.IMG_EXTENSIONS) for entry in os.scandir(root))
        self.resize_crop = transforms.Compose([
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
        ])
        super().__init__(
            root, allow_empty=True,
            loader=functools.partial(load_image, mode="L" if nc == 1 else "RGB"),
            transform=transforms.Compose([
                *self.resize_crop.transforms,
                transforms.ToTensor(),
                transforms.Normalize((0.5,) * nc, (0.5,) * nc),
            ]))

    def find_classes(self, directory):
        # A flat folder is one class whose folder is the root itself.
        return ([""], {"": 0}) if self.is_flat else super().find_classes(directory)

    def _open(self, index):
        path = self.samples[index][0]
        try:
            return self.loader(path)  # convert() decodes, so a broken file fails here
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            print(f"warning: skipping unreadable image {path}: {error}", file=sys.stderr)
            return None

    def __getitem__(self, index):
        """The tutorial's normalised CHW float tensor, or None if unreadable."""
        image = self._open(index)
        return None if image is None else self.transform(image)

    def pixels(self, index):
        """The image after Resize and CenterCrop as a CHW uint8 array, or None."""
        image = self._open(index)
        if image is None:
            return None
        array = np.asarray(self.resize_crop(image), dtype=np.uint8)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


class Batches:
    """The tutorial's dataloader: batches in its shuffle order, as normalised tensors on
    the device, whether the pixels come from the decode-once cache (part II) or, with
    --no-cache, from ImageFolder and DataLoader workers as in the tutorial.

    The shuffle is drawn by a DataLoader over the image indices, which makes exactly the
    random draws of the tutorial's DataLoader; under torchrun a DistributedSampler gives
    each process its disjoint share of batch_size / world_size images.
    """

    def __init__(self, images, pixels, batch_size, workers, proc, seed=0, channels_last=False):
        self.images, self.workers, self.device = images, workers, proc.device
        self.channels_last = channels_last
        count = len(images) if pixels is None else len(pixels)
        self.sampler = (torch.utils.data.DistributedSampler(
            range(count), num_replicas=proc.world_size, rank=proc.rank, shuffle=True, seed=seed)
            if proc.world_size > 1 else None)
        self.index_loader = torch.utils.data.DataLoader(
            range(count), batch_size=batch_size // proc.world_size,
            shuffle=self.sampler is None, sampler=self.sampler)
        self.pixels = pixels_on_device(pixels, proc.device) if pixels is not None else None

    def __len__(self):
        return len(self.index_loader)

    def epoch(self, epoch, start=0):
        """The batches of one epoch from batch `start` on. The shuffle's random draws
        happen here, at once, as when the tutorial's loop starts an epoch."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        return self._batches(list(self.index_loader)[start:])

    def first(self):
        """One batch, drawn as the tutorial's next(iter(dataloader)) draws it."""
        return next(self._batches([next(iter(self.index_loader))]))

    def _batches(self, index_batches):
        if self.pixels is not None:
            batches = cached_batches(self.pixels, index_batches, self.device)
        else:
            batches = decoded_batches(self.images, index_batches, self.workers, self.device)
        for batch in batches:
            yield batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch


# ----------------------------------------------------------------------------------------
# Weight initialization, Generator, Discriminator
# ----------------------------------------------------------------------------------------

# custom weights initialization called on netG and netD (the tutorial's, verbatim)
def weights_init(m):
    classname = m.__class__.__name__
    if classname.find('Conv') != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find('BatchNorm') != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


class Generator(nn.Module):
    """z (nz x 1 x 1) -> image (nc x image_size x image_size) in [-1, 1].

    At 64 px this is the tutorial's generator, layer for layer (the state sizes below).
    Each doubling of image_size adds one middle block (and doubles the maps at 4x4).
    """

    def __init__(self, nz=100, ngf=64, nc=3, image_size=64):
        super().__init__()
        mult = image_size // 8
        layers = [
            # input is Z, going into a convolution
            nn.ConvTranspose2d(nz, ngf * mult, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * mult),
            nn.ReLU(True),
            # state size. (ngf*8) x 4 x 4
        ]
        while mult > 1:
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * mult // 2),
                nn.ReLU(True),
                # state size. (ngf*4) x 8 x 8, then (ngf*2) x 16 x 16, then (ngf) x 32 x 32
            ]
            mult //= 2
        layers += [
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
            # state size. (nc) x 64 x 64
        ]
        self.main = nn.Sequential(*layers)
        self.nz, self.nc, self.image_size = nz, nc, image_size

    def forward(self, input):
        return self.main(input)


class Discriminator(nn.Module):
    """image (nc x image_size x image_size) -> probability that it is real.

    At 64 px this is the tutorial's discriminator, layer for layer (the state sizes
    below); each doubling of image_size adds one stride-2 middle block.
    """

    def __init__(self, nc=3, ndf=64, image_size=64):
        super().__init__()
        layers = [
            # input is (nc) x 64 x 64
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. (ndf) x 32 x 32
        ]
        mult, size = 1, image_size // 2
        while size > 4:
            layers += [
                nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * mult * 2),
                nn.LeakyReLU(0.2, inplace=True),
                # state size. (ndf*2) x 16 x 16, then (ndf*4) x 8 x 8, then (ndf*8) x 4 x 4
            ]
            mult, size = mult * 2, size // 2
        layers += [
            nn.Conv2d(ndf * mult, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        ]
        self.main = nn.Sequential(*layers)

    def forward(self, input):
        return self.main(input)


def build_models(args, device):
    """Creates G, applies weights_init, then D: the tutorial's order of random draws."""
    # Create the generator and apply the weights_init function
    netG = Generator(args.nz, args.ngf, args.nc, args.image_size).to(device)
    netG.apply(weights_init)
    # Create the Discriminator and apply the weights_init function
    netD = Discriminator(args.nc, args.ndf, args.image_size).to(device)
    netD.apply(weights_init)
    if args.spectral_norm:  # beyond: --spectral-norm
        apply_spectral_norm(netD)
    return netG, netD


# ----------------------------------------------------------------------------------------
# Loss functions and optimizers
# ----------------------------------------------------------------------------------------

# Establish convention for real and fake labels during training (floats: BCELoss needs them)
REAL_LABEL = 1.
FAKE_LABEL = 0.


def unchanged(images):
    """What D sees without --diffaug: the images as they are."""
    return images


@dataclasses.dataclass
class TrainingState:
    """Everything the training loop changes; a checkpoint holds it. The position (epoch,
    batch_in_epoch, iteration) is that of the next batch to train."""
    netG: nn.Module
    netD: nn.Module
    criterion: nn.Module
    fixed_noise: torch.Tensor
    optimizerD: optim.Optimizer
    optimizerG: optim.Optimizer
    logits: bool = False  # --amp, --loss hinge: D returns logits; the criterion takes them
    # Beyond the tutorial: the networks as the step runs them (wrapped for speed and
    # scale), the EMA generator, metrics, SWD rows, random streams for exact resume.
    trainG: Optional[nn.Module] = None
    trainD: Optional[nn.Module] = None
    ema: Optional[nn.Module] = None
    augment: Callable = unchanged  # --diffaug: what D sees
    metrics: Optional["Metrics"] = None
    img_list: list = dataclasses.field(default_factory=list)  # uint8 fixed-noise grids
    img_iterations: list = dataclasses.field(default_factory=list)
    evals: list = dataclasses.field(default_factory=list)
    health: list = dataclasses.field(default_factory=list)  # the health monitor's warnings
    epoch: int = 0
    batch_in_epoch: int = 0
    iteration: int = 0
    random: "RandomStreams" = dataclasses.field(default_factory=lambda: RandomStreams())
    elapsed: float = 0.0  # training seconds before this process started
    started: float = dataclasses.field(default_factory=time.time)

    @property
    def sampleG(self):
        """The generator that figures, samples and SWD use: the EMA one if there is one."""
        return self.ema if self.ema is not None else self.netG

    def seconds(self):
        """Training seconds so far, earlier processes of a resumed run included."""
        return self.elapsed + time.time() - self.started


def loss_and_optimizers(args, netG, netD, device, logits=False):
    """The tutorial's criterion, fixed noise and optimizers, in its order."""
    # Initialize the BCELoss function (--amp: the same loss on D's logits, computed stably;
    # beyond: --loss hinge)
    criterion = (HingeLoss() if args.loss == "hinge" else
                 nn.BCEWithLogitsLoss() if logits else nn.BCELoss())
    # Create batch of latent vectors that we will use to visualize the progression of the generator
    fixed_noise = torch.randn(64, args.nz, 1, 1, device=device)
    # Setup Adam optimizers for both G and D (beyond: --lr-d and --lr-g, else both --lr)
    lr_d, lr_g = learning_rates(args)
    optimizerD = optim.Adam(netD.parameters(), lr=lr_d, betas=(args.beta1, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=lr_g, betas=(args.beta1, 0.999))
    return TrainingState(netG, netD, criterion, fixed_noise, optimizerD, optimizerG, logits)


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------

def train_step(netG, netD, optimizerG, optimizerD, criterion, real, nz, logits=False,
               augment=unchanged):
    """One iteration of the tutorial's loop: part (1) updates D, part (2) updates G.
    Returns the tutorial's statistics as one tensor on the device (no host sync): Loss_D,
    Loss_G, D(x), D(G(z)) before and after D's step. `augment` (--diffaug) changes every
    image that D sees, real and fake, in both parts."""
    # Generate batch of latent vectors (the tutorial draws it after D's all-real pass;
    # nothing in between draws a random number, so the numbers are the same)
    noise = torch.randn(real.size(0), nz, 1, 1, device=real.device)
    try:
        fake, errD, D_x, D_G_z1 = d_step(netG, netD, optimizerD, criterion, real, noise,
                                         logits, augment)
        errG, D_G_z2 = g_step(netG, netD, optimizerG, criterion, fake, logits, augment)
    except RuntimeError as error:
        if "between 0 and 1" in str(error):  # BCELoss refused a NaN from D
            raise Diverged() from None
        raise
    return torch.stack([errD, errG, D_x, D_G_z1, D_G_z2]).detach()


def d_step(netG, netD, optimizerD, criterion, real, noise, logits=False,
           augment=unchanged):
    """(1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))."""
    ## Train with all-real batch
    netD.zero_grad(set_to_none=True)
    b_size = real.size(0)
    label = torch.full((b_size,), REAL_LABEL, dtype=torch.float, device=real.device)
    # Forward pass real batch through D
    output = netD(augment(real)).view(-1)
    # Calculate loss on all-real batch
    errD_real = criterion(output, label)
    # Calculate gradients for D in backward pass
    errD_real.backward()
    D_x = (output.sigmoid() if logits else output).mean()

    ## Train with all-fake batch
    # Generate fake image batch with G
    fake = netG(noise)
    label.fill_(FAKE_LABEL)
    # Classify all fake batch with D
    output = netD(augment(fake.detach())).view(-1)
    # Calculate D's loss on the all-fake batch
    errD_fake = criterion(output, label)
    # Calculate the gradients for this batch, accumulated (summed) with previous gradients
    errD_fake.backward()
    D_G_z1 = (output.sigmoid() if logits else output).mean()
    # Compute error of D as sum over the fake and the real batches
    errD = errD_real + errD_fake
    # Update D
    optimizerD.step()
    return fake, errD, D_x, D_G_z1


def g_step(netG, netD, optimizerG, criterion, fake, logits=False,
           augment=unchanged):
    """(2) Update G network: maximize log(D(G(z)))."""
    netG.zero_grad(set_to_none=True)
    label = torch.full((fake.size(0),), REAL_LABEL, dtype=torch.float, device=fake.device)  # fake labels are real for generator cost
    # The tutorial also back-propagates into D's weights here and throws those gradients
    # away at D's next zero_grad; freezing D skips that work and changes no number. DDP
    # must not see this forward (its parameters get no gradient), so it gets the module.
    frozen_D = netD.module if isinstance(netD, DistributedDataParallel) else netD
    frozen_D.requires_grad_(False)
    # Since we just updated D, perform another forward pass of all-fake batch through D
    output = frozen_D(augment(fake)).view(-1)
    # Calculate G's loss based on this output (beyond: --loss hinge has a loss of its own for G)
    errG = (criterion.generator_loss(output) if isinstance(criterion, HingeLoss)
            else criterion(output, label))
    # Calculate gradients for G
    errG.backward()
    frozen_D.requires_grad_(True)
    D_G_z2 = (output.sigmoid() if logits else output).mean()
    # Update G
    optimizerG.step()
    return errG, D_G_z2


def stats_line(epoch, num_epochs, i, num_batches, stats):
    """The tutorial's statistics line, to the letter."""
    return ('[%d/%d][%d/%d]\tLoss_D: %.4f\tLoss_G: %.4f\tD(x): %.4f\tD(G(z)): %.4f / %.4f'
            % (epoch, num_epochs, i, num_batches, *stats))


def training_loop(args, proc, state, dataloader, extras):
    """The tutorial's training loop: for each batch of each epoch, update D, then G; print
    the statistics every --log-every batches; save the losses; every --sample-every
    iterations save G's output on the fixed noise. Each extra is one call to `extras`.
    Returns after the last iteration, or early when a signal asked to stop."""
    num_batches = len(dataloader)
    total = args.num_epochs * num_batches
    last_iteration = min(total, args.max_iters or total) - 1  # beyond: --max-iters
    if state.iteration > last_iteration:
        return proc.log(f"Nothing to train: the run already has {state.iteration} "
                        "iterations; raise --num-epochs or --max-iters to train longer")
    proc.log("Starting Training Loop...")
    # For each epoch
    for epoch in range(state.epoch, args.num_epochs):
        # For each batch in the dataloader (a resumed epoch: the same shuffle, from its batch)
        batches = state.random.epoch(dataloader, epoch, state.batch_in_epoch)
        for i, data in enumerate(batches, state.batch_in_epoch):
            iters = state.iteration
            # (1) Update D network, (2) Update G network
            stats = train_step(state.trainG, state.trainD, state.optimizerG, state.optimizerD,
                               state.criterion, data, args.nz, state.logits, state.augment)
            state.iteration, state.batch_in_epoch = iters + 1, i + 1
            last = iters == last_iteration
            extras.after_step()  # beyond: EMA, progress bar

            # Save Losses for plotting later (on the device until the next stats line)
            state.metrics.record(epoch, iters, stats, state.seconds())
            # Output training stats
            if i % args.log_every == 0 or last:
                rows = state.metrics.flush()
                if i % args.log_every == 0:
                    proc.log(stats_line(epoch, args.num_epochs, i, num_batches, rows[-1][2:7]))
                extras.after_stats()  # beyond: TensorBoard

            # Check how the generator is doing by saving G's output on fixed_noise
            if (iters % args.sample_every == 0) or last:
                state.img_list.append(fixed_noise_grid(state.sampleG, state.fixed_noise))
                state.img_iterations.append(iters)
                extras.after_grid()  # beyond: progress/*.png, TensorBoard

            extras.measure(iters, last)  # beyond: SWD every --eval-every
            stopping = extras.stop.requested()  # beyond: Ctrl-C, SIGTERM (on any rank)
            extras.save_checkpoint(iters, due=last or stopping)  # beyond: checkpoint.pt
            if stopping or last:
                return
        # The epoch is over: the next batch is the first of the next epoch, a new shuffle
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        state.random.end_epoch()
        extras.end_epoch(epoch)  # beyond: a summary line in logs, checkpoint


def fixed_noise_grid(netG, fixed_noise):
    """The tutorial's fixed-noise grid (G in training mode, as the tutorial calls it),
    as a uint8 CHW tensor on the CPU."""
    with torch.no_grad():
        fake = netG(fixed_noise).detach().cpu()
    return to_uint8(vutils.make_grid(fake.float(), padding=2, normalize=True))


def to_uint8(grid):
    return grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------------------
# Results: training images, loss curve, G's progression, real vs fake
# ----------------------------------------------------------------------------------------

def new_figure(figsize):
    # matplotlib's object API with no pyplot: no global backend, no display needed.
    from matplotlib.figure import Figure
    return Figure(figsize=figsize)


def show_grid(ax, grid, title):
    ax.axis("off")
    ax.set_title(title)
    ax.imshow(np.transpose(grid.numpy(), (1, 2, 0)))


def save_training_images(real_batch, path):
    fig = new_figure((8, 8))
    show_grid(fig.add_subplot(), vutils.make_grid(real_batch[:64].float().cpu(), padding=2,
                                                  normalize=True), "Training Images")
    fig.savefig(path, bbox_inches="tight")


def save_loss_curve(G_losses, D_losses, path):
    fig = new_figure((10, 5))
    ax = fig.add_subplot()
    ax.set_title("Generator and Discriminator Loss During Training")
    ax.plot(G_losses, label="G")
    ax.plot(D_losses, label="D")
    ax.set_xlabel("iterations")
    ax.set_ylabel("Loss")
    ax.legend()
    fig.savefig(path, bbox_inches="tight")


def save_grid(grid, path):
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)


def save_progress_gif(img_list, path):
    """The tutorial's animation of the fixed-noise grids, one second a frame."""
    frames = [Image.fromarray(grid.permute(1, 2, 0).numpy()) for grid in img_list]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=1000, loop=0)


def save_real_vs_fake(real_batch, fake_grid, path):
    fig = new_figure((15, 15))
    # Plot the real images
    show_grid(fig.add_subplot(1, 2, 1), vutils.make_grid(real_batch[:64].float().cpu(),
                                                         padding=5, normalize=True), "Real Images")
    # Plot the fake images from the last epoch
    show_grid(fig.add_subplot(1, 2, 2), fake_grid, "Fake Images")
    fig.savefig(path, bbox_inches="tight")


def save_results(args, state, dataloader):
    """The final weights and the tutorial's figures."""
    out = functools.partial(os.path.join, args.outdir)
    for name, net in (("netG.pt", state.netG), ("netD.pt", state.netD)):
        atomic_write(out(name), lambda f: torch.save(net.state_dict(), f))
    save_loss_curve(state.metrics.G_losses, state.metrics.D_losses, out("loss_curve.png"))
    save_progress_gif(state.img_list, out("progress.gif"))
    # Grab a batch of real images from the dataloader (a new draw, as the tutorial's)
    real_batch = dataloader.first()
    save_real_vs_fake(real_batch, state.img_list[-1], out("real_vs_fake.png"))
    save_eval_curves(state.evals, args.outdir)


# ----------------------------------------------------------------------------------------
# The program
# ----------------------------------------------------------------------------------------

def train(args, checkpoint=None):
    """The tutorial's program from its seed to its figures. Returns the exit status: 0,
    or 128 + the signal's number when a signal stopped it after a checkpoint."""
    proc = setup_distributed(args)  # beyond: rank, device; torchrun's process group
    args = resolve_settings(args, proc)  # beyond: what this machine can give, said once
    # Create the dataset (beyond: every input is checked before anything is written)
    images, held_out = open_inputs(args, proc, checkpoint)
    with start_run(args, proc, checkpoint) as outputs:  # beyond: hold the outdir, config.json
        # Set random seed for reproducibility (one stream per rank: their noise must differ)
        proc.log("Random Seed: ", args.seed)
        random.seed(args.seed)
        torch.manual_seed(args.seed + proc.rank)

        # Create the dataloader (beyond: the images decoded once, into a cache)
        pixels, dataloader = load_data(args, proc, images)
        # Plot some training images
        real_batch = dataloader.first()
        if proc.writes:
            save_training_images(real_batch, os.path.join(args.outdir, "training_images.png"))

        netG, netD = build_models(args, proc.device)
        # Print the models
        proc.log(netG)
        proc.log(netD)
        state = loss_and_optimizers(args, netG, netD, proc.device,
                                    logits=d_returns_logits(args))

        # Beyond: resume a checkpoint, the EMA generator, wrappers for speed and scale, extras
        prepare_training(state, args, proc, checkpoint, len(dataloader))
        extras = Extras(args, proc, state, images, pixels, held_out, outputs, len(dataloader))
        # Training Loop
        try:
            with extras:
                training_loop(args, proc, state, dataloader, extras)
        except Diverged as error:
            raise extras.diverged(error) from None
        if extras.stop.stopping:
            return extras.stopped()
        if proc.writes:
            save_results(args, state, dataloader)
            proc.log(f"Wrote {args.outdir}: netG.pt, netD.pt, metrics.csv, figures")
        finish_distributed(proc)
        return 0


# ========================================================================================
# Part II: beyond the tutorial
# ========================================================================================
#
# One concern a section, in order of use: each section uses only those before it (and part
# I's models and figures), from files, devices, stopping and data up to the command line;
# main(), the entry point, comes last.


# ----------------------------------------------------------------------------------------
# Files: atomic writes, locks, CSV
# ----------------------------------------------------------------------------------------

def reason(error):
    """The reason an OSError gives, or its text when it gives none."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def first_line(error):
    """An error's first line of text, or its type's name when it has none."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def atomic_write(path, write):
    """Writes a file through a temporary file, flush, fsync and rename, so that a crash at
    any moment leaves either the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; outputs are ordinary files
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                write(f)
            except RuntimeError:  # torch.save's failed writes hide their reason: ask the disk
                f.seek(0, os.SEEK_END)
                f.write(b"\0")
                f.flush()  # raises the OSError (disk full, file too large) if writes fail
                raise  # else it was no write that failed
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def take_lock(path, wait=True):
    """The file at path, open and exclusively locked until closed (or the process ends,
    however it ends); with wait=False, None at once if another process holds it. Without
    fcntl (Windows) the file holds no lock."""
    f = open(path, "a+")
    if fcntl is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.close()
            return None
    return f


def csv_text(rows):
    """Rows as CSV lines; numbers as Python writes them, so that they read back exactly."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()


def size_text(size):
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def writable_folder(flag, folder):
    """Creates the folder and proves it writable, or says in one line why not."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"{flag} {folder}: cannot write there ({reason(error)}); "
                        "choose a writable folder") from None


# ----------------------------------------------------------------------------------------
# Devices and torchrun
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Process:
    """This process's place in the job: its rank among world_size processes, its device,
    and whether it writes (rank 0 alone prints, plots and writes files)."""
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def writes(self):
        return self.rank == 0

    def log(self, *values):
        """print() for rank 0, that keeps a progress bar below the lines."""
        if self.writes:
            tqdm.write(" ".join(str(v) for v in values))


def setup_distributed(args):
    """Joins the torchrun job if there is one, and tunes this process for its device
    (--deterministic's kernels; glibc's memory on the CPU); returns this Process.

    NCCL on CUDA, Gloo elsewhere. The timeout makes a rank that died or hangs end the
    whole job with an error instead of a silent wait; torchrun stops the other ranks.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        proc = Process(device=pick_device(args.device, args.ngpu))
    else:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        if args.ngpu > 1:
            raise UserError("--ngpu > 1 (nn.DataParallel) cannot run under torchrun, which "
                            "already gives each GPU its own process; drop --ngpu")
        if args.batch_size % world_size:
            raise UserError(f"--batch-size {args.batch_size} cannot be split evenly over "
                            f"{world_size} processes; use a multiple of {world_size}")
        device = pick_device(args.device, args.ngpu, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
        proc = Process(rank, world_size, device)
    if proc.device.type == "cpu" and not keep_freed_memory():
        proc.log("note: the C library is not glibc: freed memory goes back to the system "
                 "every iteration, which slows CPU training")
    configure_determinism(args.deterministic, proc.device)
    return proc


def finish_distributed(proc):
    if proc.world_size > 1:
        dist.destroy_process_group()


def barrier(proc):
    if proc.world_size > 1:
        dist.barrier()


def broadcast(tensor, proc):
    """Rank 0's tensor on every rank."""
    if proc.world_size > 1:
        dist.broadcast(tensor, 0)


def gather(obj, proc):
    """The list of every rank's obj (under torchrun), or [obj]."""
    if proc.world_size == 1:
        return [obj]
    objects = [None] * proc.world_size
    dist.all_gather_object(objects, obj)
    return objects


def pick_device(requested, ngpu=1, local_rank=None):
    """The tutorial's rule, extended: this machine's accelerator (CUDA, MPS, ...) if it has
    one and ngpu > 0, else the CPU. `requested` overrides unless it is 'auto'. A CUDA
    device comes back with its index (cuda -> cuda:0; under torchrun, the local rank's)."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if requested == "auto":
        device = accelerator if ngpu > 0 and accelerator is not None else torch.device("cpu")
    else:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise UserError(f"--device {requested}: not a device name; use auto, cpu, cuda, "
                            "cuda:N or mps") from None
        if device.type != "cpu" and (accelerator is None or device.type != accelerator.type
                                     or (device.index or 0) >= torch.accelerator.device_count()):
            raise UserError(f"--device {requested}: this machine has no such device "
                            f"(torch {torch.__version__}); use --device auto or cpu")
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return concrete_device(device)


def concrete_device(device):
    """The device with its index: cuda -> cuda:N (the current CUDA device), so that two
    names of one device compare equal."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return device


def configure_determinism(deterministic, device):
    """--deterministic: kernels that give the same bits on every run, at some cost in
    speed. Without it, cuDNN times several convolution algorithms and keeps the fastest,
    and some of its kernels add in an order that changes from run to run: fast, but CUDA
    runs are not repeatable. The CPU's kernels are repeatable either way."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        # cuBLAS needs a fixed workspace for repeatable sums; set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


def keep_freed_memory():
    """glibc hands every large freed block (each activation, each iteration) back to the
    kernel, and the next iteration page-faults it in again: a fifth of a CPU training step
    here. Raising its mmap and trim thresholds keeps that memory in the process. Changes
    no number. Returns False where the C library is not glibc (nothing done)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return False
    mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks up to 1 GiB from the heap
    mallopt(-1, 2 ** 31 - 1)  # M_TRIM_THRESHOLD (a C int): keep up to 2 GiB of free heap
    return True


def amp_supported(device):
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


class Autocast(nn.Module):
    """Runs a network under bf16 autocast and returns float32."""

    def __init__(self, model, device_type):
        super().__init__()
        self.net = model
        self.device_type = device_type

    def forward(self, input):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.net(input).float()


def prepare_for_training(model, args, proc, logits=False):
    """Wraps a network for speed and scale, each wrapper only when the resolved settings ask:
    channels-last, SyncBatchNorm, bf16 autocast, torch.compile, then nn.DataParallel (--ngpu,
    the tutorial's) or DistributedDataParallel (torchrun). The unwrapped model keeps the
    parameters, the state dict and the tutorial's layout."""
    device = proc.device
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces layers in place
    # logits: D without its final Sigmoid (sharing its parameters); the criterion takes
    # the Sigmoid in (BCEWithLogitsLoss: the same function, computed stably) or needs none
    net = model.main[:-1] if logits else model
    if args.amp:
        net = Autocast(net, device.type)
    if args.compile:
        net = torch.compile(net)
    if proc.world_size > 1:
        net = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    elif device.type == "cuda" and args.ngpu > 1:
        net = nn.DataParallel(net, list(range(args.ngpu)))
    return net


def check_network_memory(args, proc):
    """Before anything is built: refuses a run whose networks and one step's activations
    would not fit the device's memory (CUDA) or the machine's (CPU)."""
    needed, params = step_memory(args, args.batch_size // proc.world_size)
    device = proc.device
    if device.type == "cuda":
        available = torch.cuda.get_device_properties(device).total_memory
    elif hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        return
    if needed > available:
        raise UserError(f"--image-size {args.image_size}: one training step would need about "
                        f"{needed / 2**30:,.1f} GiB ({params / 1e6:,.0f} million weights with "
                        "their gradients and Adam's moments, and the activations of a batch of "
                        f"{args.batch_size // proc.world_size}), more than the "
                        f"{available / 2**30:,.1f} GiB of this {device.type}; use a smaller "
                        "--image-size, --batch-size, --ngf or --ndf")


def step_memory(args, batch):
    """(bytes, weights) of a float32 training step, estimated from shapes alone (no memory
    is touched): weights, gradients and Adam's two moments, plus each layer's output in
    G's pass and D's three passes, kept for backward, and twice as much again for the
    gradients and temporaries of backward. The default run comes to 1.2 GiB; on a CPU it
    peaks at about 1.5 GiB RSS, the interpreter and libraries included."""
    outputs = []
    with torch.device("meta"):
        netG = Generator(args.nz, args.ngf, args.nc, args.image_size)
        netD = Discriminator(args.nc, args.ndf, args.image_size)
        for layer in [*netG.main, *netD.main]:
            if not getattr(layer, "inplace", False):  # an in-place ReLU keeps no tensor of its own
                layer.register_forward_hook(lambda module, inputs, output: outputs.append(output.numel()))
        fake = netG(torch.empty(batch, args.nz, 1, 1))
        d_count = len(outputs)
        netD(fake)
    weights = sum(p.numel() for net in (netG, netD) for p in net.parameters())
    activations = sum(outputs[:d_count]) + 3 * sum(outputs[d_count:])
    return 4 * (4 * weights + 3 * activations), weights


# ----------------------------------------------------------------------------------------
# Stopping: signals and divergence
# ----------------------------------------------------------------------------------------

# Ctrl-C, kill, a closed terminal, SLURM's warning before its time limit (--signal): each
# writes a checkpoint and ends the run (the last two do not exist on Windows).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1")
                     if hasattr(signal, name))


FAILURE_STOP = 256  # what StopRequest holds instead of a signal's number: --on-failure stop


class StopRequest:
    """Turns the stop signals into a flag that the loop checks after each iteration, so that
    the run writes a checkpoint and says how to resume. Under torchrun the ranks vote every
    iteration without waiting: each vote is summed (on Gloo, on the CPU) while the next
    iteration runs, so every rank stops after the same iteration, one after the signal."""

    def __init__(self, proc):
        self.proc, self.signum, self.stopping, self.saving = proc, None, False, False
        self.group = self.vote = self.counting = None
        if proc.world_size > 1:  # a CPU group even beside NCCL: a vote never syncs the GPU
            self.group = dist.new_group(backend="gloo") if proc.device.type == "cuda" else None

    def requested(self):
        """True (and `stopping` set) once this process, or under torchrun any rank, got a
        stop signal."""
        if self.proc.world_size == 1:
            self.stopping = self.signum is not None
            return self.stopping
        if self.counting is not None:  # the last iteration's vote, summed meanwhile
            self.counting.wait()
            if self.vote.item():
                self.signum, self.stopping = self.signum or int(self.vote.item()), True
        if not self.stopping:
            self.vote = torch.tensor(self.signum or 0)
            self.counting = dist.all_reduce(self.vote, op=dist.ReduceOp.MAX, group=self.group,
                                            async_op=True)
        else:
            self.counting = None
        return self.stopping

    def stop_for_failure(self):
        """--on-failure stop: the run stops after this iteration, as on a signal."""
        self.signum = self.signum or FAILURE_STOP

    @contextlib.contextmanager
    def deferred(self):
        """A signal that comes while this runs (the checkpoint's write) waits for it."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in STOP_SIGNALS}
        return self

    def handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        elif self.saving:
            print("dcgan.py: writing the checkpoint; the run stops once it is whole",
                  file=sys.stderr, flush=True)
        else:  # a second signal: stop at once (the last checkpoint stays as it was)
            raise Interrupted(signum)

    def __exit__(self, *exc):
        if self.counting is not None:  # every rank made the same calls: finish the last one
            self.counting.wait()
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class Interrupted(BaseException):
    """A second stop signal: the run ends at once, with status 128 + its number."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def ignore_interrupts(worker_id):
    """worker_init_fn: the stop signals are the main process's to handle, so that it can
    write a checkpoint before the workers go."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class Diverged(Exception):
    """A loss or D output became NaN or infinite (at `iteration`, when known)."""

    def __init__(self, iteration=None):
        super().__init__(iteration)
        self.iteration = iteration


# ----------------------------------------------------------------------------------------
# Data: the dataset, the decode-once cache and its batches
# ----------------------------------------------------------------------------------------

CELEBA_HELP = ("get CelebA's img_align_celeba.zip from the official site "
               "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html) or the Kaggle mirror "
               "(kaggle.com/datasets/jessicali9530/celeba-dataset), or try --download; "
               "see data/README.md")


def make_dataset(dataroot, image_size=64, nc=3, flag="--dataroot"):
    """Turns a folder into FaceImages, or explains in one line what is wrong with it."""
    if not os.path.exists(dataroot):
        raise UserError(f"{flag} {dataroot}: no such folder; {CELEBA_HELP}, and unzip it so "
                        f"that {os.path.join(dataroot, 'img_align_celeba', '000001.jpg')} exists")
    if not os.path.isdir(dataroot):
        raise UserError(f"{flag} {dataroot}: is a file, not a folder; give the folder that "
                        "holds img_align_celeba/ (or the images themselves)")
    try:
        dataset = FaceImages(dataroot, image_size, nc)
    except FileNotFoundError:  # ImageFolder: a root with neither images nor subfolders
        dataset = []
    except PermissionError as error:
        raise UserError(f"{flag} {dataroot}: cannot be read ({error.strerror})") from None
    if len(dataset) == 0:
        raise UserError(f"{flag} {dataroot}: holds no images "
                        f"({', '.join(dset.folder.IMG_EXTENSIONS[:4])}, ...); expected "
                        f"{os.path.join(dataroot, 'img_align_celeba', '*.jpg')} or a folder "
                        f"of images; {CELEBA_HELP}")
    return dataset


def open_eval_images(args, images):
    """The held-out images of --eval-dataroot, or None; without them SWD needs two
    disjoint sets of training images (one to compare with, one for the floor)."""
    held_out = args.eval_dataroot and make_dataset(args.eval_dataroot, args.image_size,
                                                   args.nc, "--eval-dataroot")
    if not held_out and len(images) < 2:
        raise UserError(f"--eval-every: SWD needs at least 2 training images (a set to "
                        f"compare with and a set for the floor), and {images.root} has "
                        f"{len(images)}; add images, or give --eval-dataroot")
    return held_out or None


def load_image(path, mode):
    """torchvision's PIL loader, converting to `mode` ('RGB' or 'L')."""
    with open(path, "rb") as f:
        return Image.open(f).convert(mode)


class PixelView(torch.utils.data.Dataset):
    """FaceImages.pixels as a dataset, so that DataLoader workers can decode in parallel."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return index, self.images.pixels(index)


def stack_pixels(batch):
    """collate_fn: (readable indices, their pixels in C order, as the cache's), or None."""
    batch = [(i, p) for i, p in batch if p is not None]
    pixels = np.ascontiguousarray(np.stack([p for _, p in batch])) if batch else None
    return [i for i, _ in batch], None if pixels is None else torch.from_numpy(pixels)


def decoded_pixels(images, index_batches, workers, desc=None, pin=False):
    """The one decode path: DataLoader workers decode images.pixels of each index batch, in
    order, and yield (the indices kept, uint8 tensor k x C x H x W; page-locked with `pin`).
    An unreadable image is left out (FaceImages names it); `desc` shows a progress bar."""
    loader = torch.utils.data.DataLoader(
        PixelView(images), batch_sampler=[list(map(int, b)) for b in index_batches],
        num_workers=min(workers, len(index_batches)), collate_fn=stack_pixels,
        pin_memory=pin, worker_init_fn=ignore_interrupts,
        # A generator of its own, so that decoding draws nothing from the tutorial's stream.
        generator=torch.Generator())
    scale = len(index_batches[0]) if index_batches else 1
    for kept, batch in tqdm(loader, desc=desc, unit_scale=scale, unit="img", leave=False,
                            disable=None if desc else True):
        if batch is not None:
            yield kept, batch


def decoded_batches(images, index_batches, workers, device):
    """--no-cache, the tutorial's pipeline: every image decoded in every epoch by
    DataLoader workers, then normalised on the device as the cache's batches are."""
    for _, batch in decoded_pixels(images, index_batches, workers, pin=device.type == "cuda"):
        yield normalize_pixels(batch.to(device, non_blocking=True))


def real_uint8(images, pixels, indices, workers):
    """The real images at indices as uint8, from the cache when there is one."""
    if pixels is not None:
        return pixels[torch.as_tensor(indices)].cpu()
    chunks = [indices[k:k + 256] for k in range(0, len(indices), 256)]
    batches = [batch for _, batch in decoded_pixels(images, chunks, workers,
                                                    "decoding evaluation images")]
    if not batches:
        raise UserError(f"--eval-dataroot {images.root}: none of its images could be read")
    return torch.cat(batches)


@functools.lru_cache(maxsize=8)  # one stat a file (3 s for CelebA), once a run
def file_digest(images):
    """A digest of the file list: names, sizes and modification times. It changes when an
    image is added, removed or edited in place."""
    digest = hashlib.sha256()
    for path, _ in images.samples:
        st = os.stat(path)
        # fsencode: a name need not be valid UTF-8
        digest.update(b"\0" + os.fsencode(os.path.relpath(path, images.root))
                      + f"\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_folder(cache_dir=None):
    """--cache-dir, or by default $XDG_CACHE_HOME/dcgan-faces (~/.cache/dcgan-faces)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return cache_dir or os.path.join(base, "dcgan-faces")


CACHE_VERSION = 1


def cache_path(images, image_size, nc, cache_dir):
    """The cache file of these images at this size: a changed dataset gets another one."""
    key = hashlib.sha256(f"{CACHE_VERSION} {image_size} {nc} {images.resize_crop} "
                         f"{file_digest(images)}".encode()).hexdigest()[:20]
    return os.path.join(cache_dir, f"faces-{len(images)}-{nc}x{image_size}-{key}.npy")


def load_pixel_cache(images, image_size, nc, cache_dir, workers, build=True):
    """The whole dataset after Resize and CenterCrop as one uint8 tensor N x C x H x W,
    decoded once into a .npy file that later runs map into memory: the operating system
    keeps one copy of it in its page cache, whichever runs and ranks read it. A damaged
    file is decoded again. Returns None when build is False and there is no intact file
    yet (the other ranks of a torchrun job wait for rank 0). cache_dir None: the default."""
    cache_dir = cache_folder(cache_dir)
    path = cache_path(images, image_size, nc, cache_dir)
    row_shape = (nc, image_size, image_size)
    pixels, problem = open_pixel_cache(path, len(images), row_shape)
    if pixels is not None or not build:
        return pixels
    try:
        os.makedirs(cache_dir, exist_ok=True)
        # one builder at a time; the others then map its file
        with contextlib.closing(take_lock(path + ".lock")):
            pixels, problem = open_pixel_cache(path, len(images), row_shape)
            if pixels is None:
                if problem:
                    print(f"warning: the image cache {path} is damaged ({problem}); "
                          "decoding the images again", file=sys.stderr)
                build_pixel_cache(images, path, row_shape, workers)
                pixels, problem = open_pixel_cache(path, len(images), row_shape)
    except OSError as error:
        raise UserError(f"--cache-dir {cache_dir}: cannot write the image cache "
                        f"({reason(error)}); give a writable --cache-dir, or --no-cache") from None
    return pixels


def open_pixel_cache(path, count, row_shape):
    """(the mapped pixels, None), or (None, what is wrong with the file), or (None, None)
    when there is no file. Checks the sidecar, the header, the dtype, the shape against
    the folder's file count and the file's size against its header."""
    if not os.path.exists(path):
        return None, None
    try:
        with open(path + ".json") as f:
            skipped = json.load(f)["skipped"]
        # mode "c": a writable view whose pages stay the shared page cache unless written
        array = np.load(path, mmap_mode="c")
        expected = (count - len(skipped), *row_shape)
        if array.dtype != np.uint8 or array.shape != expected:
            return None, f"it holds {array.dtype} {array.shape}, not uint8 {expected}"
        if os.path.getsize(path) != array.offset + array.nbytes:
            return None, "its size does not match its header"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, reason(error)
    if skipped:
        print(f"warning: {len(skipped)} unreadable images are left out (listed in "
              f"{path}.json)", file=sys.stderr)
    return torch.from_numpy(array), None


def npy_header(count, row_shape):
    """numpy's .npy header of count uint8 rows; numpy pads it for a row count of up to 21
    digits, so a smaller count can be rewritten in place."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (count, *row_shape)})
    return header.getvalue()


def build_pixel_cache(images, path, row_shape, workers):
    """Decodes every image straight into a memory-mapped file of the final size, under a
    temporary name, then renames it into place: memory stays a few batches whatever the
    dataset's size, and a killed build never leaves a file that looks complete."""
    for stale in glob.glob(glob.escape(path) + ".*.tmp"):  # a killed build's
        os.unlink(stale)
    row_bytes, count = math.prod(row_shape), len(images)
    header = npy_header(count, row_shape)
    needed, free = len(header) + count * row_bytes, shutil.disk_usage(os.path.dirname(path)).free
    if needed > free:
        raise UserError(f"--cache-dir {os.path.dirname(path)}: the image cache needs "
                        f"{size_text(needed)} and {size_text(free)} is free there; give a "
                        "--cache-dir with room, or --no-cache")
    start, tmp = time.time(), f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb+") as f:
            if hasattr(os, "posix_fallocate"):  # the disk's blocks now: a full disk is an error here, not a crash later
                os.posix_fallocate(f.fileno(), 0, needed)
            f.truncate(needed)
            f.write(header)
            f.flush()
            rows = np.memmap(f, dtype=np.uint8, mode="r+", offset=len(header),
                             shape=(count, *row_shape))
            kept = []
            chunks = [range(k, min(k + 256, count)) for k in range(0, count, 256)]
            for indices, batch in decoded_pixels(images, chunks, workers, "decoding images once"):
                rows[len(kept):len(kept) + len(batch)] = batch.numpy()
                kept += indices
            rows.flush()
            del rows
            if not kept:
                raise UserError(f"--dataroot {images.root}: none of its {count} images "
                                "could be read")
            if len(kept) < count:  # unreadable images: the rows are contiguous, drop the tail
                f.seek(0)
                f.write(npy_header(len(kept), row_shape))
                f.truncate(len(header) + len(kept) * row_bytes)
            f.flush()
            os.fsync(f.fileno())
        skipped = [images.samples[i][0] for i in sorted(set(range(count)) - set(kept))]
        # The .npy comes last: its existence says the cache is complete.
        atomic_write(path + ".json", lambda f: f.write(json.dumps(
            {"root": os.path.abspath(images.root), "images": count, "skipped": skipped},
            indent=1).encode()))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"Decoded {len(kept)} images once in {time.time() - start:.1f} s into {path}"
          + (f" ({len(skipped)} unreadable skipped)" if skipped else ""))


def load_data(args, proc, images):
    """The decode-once cache (built by rank 0 while the others wait) and the dataloader."""
    pixels = None
    if not args.no_cache:
        pixels = load_pixel_cache(images, args.image_size, args.nc, args.cache_dir,
                                  args.workers, build=proc.writes)
        barrier(proc)
        if pixels is None:
            pixels = load_pixel_cache(images, args.image_size, args.nc, args.cache_dir,
                                      args.workers)
    dataloader = Batches(images, pixels, args.batch_size, args.workers, proc, args.seed,
                         args.channels_last)
    return pixels, dataloader


def pixels_on_device(pixels, device):
    """The whole cache on the GPU when it fits (no host copies at all), else where it is."""
    if device.type == "cuda" and pixels.numel() < 0.5 * torch.cuda.mem_get_info(device)[0]:
        return pixels.to(device)  # uint8: one byte a pixel
    return pixels


def transfer_kind(source, target):
    """How a batch on `source` reaches `target`: "none" when it is there already (cuda
    and cuda:0 are one place), "pin and copy" from the CPU to CUDA (page-locked memory
    lets the copy overlap the step), else "copy". Only CPU tensors can be pinned."""
    if concrete_device(source) == concrete_device(target):
        return "none"
    return "pin and copy" if source.type == "cpu" and target.type == "cuda" else "copy"


def cached_batches(pixels, index_batches, device):
    """The cache's uint8 rows of each batch, moved to the device and normalised there."""
    move = transfer_kind(pixels.device, device)
    if move == "pin and copy":
        yield from staged_batches(pixels, index_batches, device)
        return
    if pixels.device.type != "cpu" and index_batches:
        # One host-to-device copy of the epoch's indices instead of one per batch.
        sizes = [len(b) for b in index_batches]
        index_batches = torch.cat(index_batches).to(pixels.device).split(sizes)
    for indices in index_batches:
        batch = pixels.index_select(0, indices)
        yield normalize_pixels(batch if move == "none" else batch.to(device))


def staged_batches(pixels, index_batches, device):
    """From a host cache to a GPU: each batch is gathered into one of two pinned buffers
    and copied without blocking, one batch ahead, so that the gather of the next batch
    overlaps the step on the current one."""
    size = max((len(b) for b in index_batches), default=0)
    buffers = [torch.empty((size, *pixels.shape[1:]), dtype=torch.uint8).pin_memory()
               for _ in range(2)]
    copied = [None, None]  # the CUDA event after each buffer's last copy
    ready = None
    for k, indices in enumerate(index_batches):
        if copied[k % 2] is not None:
            copied[k % 2].synchronize()  # its previous copy is done: the buffer is free
        buffer = buffers[k % 2][:len(indices)]
        torch.index_select(pixels, 0, indices, out=buffer)
        on_device = buffer.to(device, non_blocking=True)
        copied[k % 2] = torch.cuda.Event()
        copied[k % 2].record()
        if ready is not None:
            yield normalize_pixels(ready)
        ready = on_device
    if ready is not None:
        yield normalize_pixels(ready)


def normalize_pixels(pixels):
    """uint8 pixels to the model's input: the arithmetic of the tutorial's ToTensor
    (x / 255) and Normalize(0.5, 0.5) ((x - 0.5) / 0.5), done in place, on the device;
    the results are bit-identical."""
    return pixels.to(torch.float32).div_(255).sub_(0.5).div_(0.5)


# ----------------------------------------------------------------------------------------
# Download: CelebA from the Hugging Face Hub, verified, resumable, safe to interrupt
# ----------------------------------------------------------------------------------------

CELEBA_ZIP = "img_align_celeba.zip"
CELEBA_ZIP_MD5 = "00d2c5bc6d35e252742224ab0c1e8fcb"  # the official file's, as torchvision lists it
# Hub dataset repos that hold the official img_align_celeba.zip, tried in order
HUB_COPIES = ("AlexWortega/celeb",)
MANUAL_ROUTES = ("get img_align_celeba.zip by hand from the official site "
                 "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html), Kaggle "
                 "(kaggle.com/datasets/jessicali9530/celeba-dataset) or the Hub "
                 f"(huggingface.co/datasets/{HUB_COPIES[0]})")


class CopyRefused(Exception):
    """One copy of CelebA cannot be used (missing, gated, unverified): try the next."""


class NoNetwork(Exception):
    """The Hub cannot be reached at all (offline mode, no route, a firewall)."""


def download_celeba(dataroot, source=None):
    """--download: leaves DATAROOT/img_align_celeba/ complete, as if the official zip had
    been unzipped there by hand. Tries `source` (--download-from REPO[@REVISION]) or the
    built-in Hub copies in order, then torchvision's Google Drive route. An existing
    folder needs no network; a download resumes where the last one stopped; the folder
    appears only whole and verified."""
    target = os.path.join(dataroot, "img_align_celeba")
    if os.path.isdir(target):
        return
    for stale in glob.glob(os.path.join(glob.escape(dataroot), ".unpacking-*")):  # a killed unpack's
        shutil.rmtree(stale, ignore_errors=True)
    copies = [source] if source else list(HUB_COPIES)
    failures = []
    for k, copy_id in enumerate(copies):
        try:
            zip_path = fetch_celeba_zip(copy_id, dataroot, official=source is None)
            unpack_celeba(zip_path, dataroot)
            os.unlink(zip_path)  # 1.4 GB: the folder is what training reads
            return
        except CopyRefused as error:
            more = "; trying the next copy" if k + 1 < len(copies) else ""
            print(f"--download: {copy_id}: {error}{more}", file=sys.stderr)
            failures.append(copy_id)
        except NoNetwork as error:
            raise UserError(f"--download: {error}; {MANUAL_ROUTES}, and unzip it into "
                            f"{dataroot} (or copy a Hub cache from a machine with network)") from None
    if source is None:
        download_from_google_drive(dataroot)
        return
    raise UserError(f"--download: no copy of CelebA could be used ({', '.join(failures)}); "
                    f"{MANUAL_ROUTES}, and unzip it into {dataroot}")


def fetch_celeba_zip(copy_id, dataroot, official=True):
    """The copy's img_align_celeba.zip in dataroot, downloaded by the Hub client (which
    honours HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE, shows size, speed and time left,
    and retries a dropped connection) into a .part file that a later run resumes. Built-in
    copies must have the official MD5; a --download-from copy may differ, with a note."""
    from huggingface_hub import constants, errors, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers
    import httpx2  # the Hub client's HTTP library: its errors say "no network"

    repo, _, revision = copy_id.partition("@")
    zip_path = os.path.join(dataroot, CELEBA_ZIP)
    if os.path.isfile(zip_path):  # a finished, verified download that was not unpacked
        return zip_path
    url = hf_hub_url(repo, CELEBA_ZIP, repo_type="dataset", revision=revision or None,
                     endpoint=os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        meta = get_hf_file_metadata(url)
    except errors.OfflineModeIsEnabled:
        raise NoNetwork("HF_HUB_OFFLINE is set, and CelebA is not here yet") from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as error:
        raise NoNetwork(f"cannot reach {url.split('/datasets/')[0]} ({error})") from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError,
            errors.EntryNotFoundError) as error:
        raise CopyRefused(f"not found ({type(error).__name__})") from None
    except errors.GatedRepoError:
        raise CopyRefused("gated: it needs an accepted licence and HF_TOKEN") from None
    except errors.HfHubHTTPError as error:
        raise CopyRefused(f"the Hub refused ({first_line(error)})") from None
    if not meta.size:
        raise CopyRefused("the Hub gives no size for the file")
    writable_folder("--dataroot", dataroot)
    part = os.path.join(dataroot, f".{CELEBA_ZIP}.{(meta.etag or 'x')[:16]}.part")
    have = os.path.getsize(part) if os.path.exists(part) else 0
    check_room(dataroot, meta.size - have, meta.size)
    print(f"Downloading {CELEBA_ZIP} ({size_text(meta.size)}) from {repo}"
          + (f" at {revision}" if revision else "") + (f", resuming at {size_text(have)}" if have else ""))
    try:
        with open(part, "ab") as f:
            http_get(meta.location, f, resume_size=have, headers=build_hf_headers(),
                     expected_size=meta.size, displayed_filename=CELEBA_ZIP)
    except (httpx2.TransportError, OSError) as error:
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EFBIG):
            raise UserError(f"--download: the disk is full or the file too large ({reason(error)}) "
                            f"after {size_text(os.path.getsize(part))}: CelebA needs "
                            f"{size_text(meta.size)} for the zip and about as much for the "
                            f"folder in {dataroot}; free some space and run --download again") from None
        done = os.path.getsize(part) if os.path.exists(part) else 0
        raise UserError(f"--download: the connection broke after {size_text(done)} of "
                        f"{size_text(meta.size)} ({first_line(error)}); run --download "
                        "again to resume") from None
    digest = file_md5(part)
    if digest != CELEBA_ZIP_MD5:
        if official:
            os.unlink(part)
            raise CopyRefused(f"its MD5 {digest} is not the official {CELEBA_ZIP_MD5}")
        print(f"note: {copy_id}'s {CELEBA_ZIP} is not the official file (MD5 {digest}); "
              "using it as a copy of your own")
    os.replace(part, zip_path)
    return zip_path


def check_room(dataroot, zip_bytes, folder_bytes):
    """One line naming both sizes when the zip and the unpacked folder do not fit."""
    free = shutil.disk_usage(dataroot).free
    if zip_bytes + folder_bytes > free:
        raise UserError(f"--download: CelebA needs {size_text(zip_bytes)} more for the zip and "
                        f"{size_text(folder_bytes)} for the unpacked folder, and {dataroot} has "
                        f"{size_text(free)} free; free some space or choose another --dataroot")


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unpack_celeba(zip_path, dataroot):
    """Unzips img_align_celeba/ into a hidden folder beside it, checking each file (the
    zip's CRC, a JPEG's first bytes), then renames it into place: an interrupted unpack
    leaves nothing that looks complete, and the next run removes what it left."""
    import zipfile
    work = tempfile.mkdtemp(prefix=".unpacking-", dir=dataroot)
    try:
        try:
            archive = zipfile.ZipFile(zip_path)
        except zipfile.BadZipFile:
            os.unlink(zip_path)
            raise CopyRefused("the file is not a zip; removed it") from None
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            wrong = [m.filename for m in members if not (m.filename.startswith("img_align_celeba/")
                                                         and m.filename.lower().endswith(".jpg"))]
            if wrong or not members:
                raise CopyRefused(f"the zip does not hold img_align_celeba/*.jpg alone "
                                  f"({', '.join(wrong[:2]) or 'it is empty'}, ...)")
            check_room(dataroot, 0, sum(m.file_size for m in members))
            with tqdm(total=sum(m.file_size for m in members), desc="unpacking", unit="B",
                      unit_scale=True, leave=False, disable=None) as bar:
                for member in members:
                    data = archive.read(member)  # checks the CRC
                    if not data.startswith(b"\xff\xd8\xff"):
                        raise CopyRefused(f"{member.filename} is not a JPEG")
                    path = os.path.join(work, *member.filename.split("/"))
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    try:
                        with open(path, "wb") as f:
                            f.write(data)
                    except OSError as error:
                        if error.errno not in (errno.ENOSPC, errno.EFBIG):
                            raise
                        raise UserError(f"--download: the disk is full or the file too large "
                                        f"({reason(error)}) while unpacking: the folder needs "
                                        f"{size_text(bar.total)} in {dataroot}; free some space "
                                        "and run --download again") from None
                    bar.update(member.file_size)
        os.rename(os.path.join(work, "img_align_celeba"), os.path.join(dataroot, "img_align_celeba"))
        print(f"Unpacked {len(members)} images into {os.path.join(dataroot, 'img_align_celeba')}; "
              f"removing {zip_path}")
    except zipfile.BadZipFile as error:
        os.unlink(zip_path)
        raise CopyRefused(f"the zip is damaged ({error}); removed it") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def download_from_google_drive(dataroot):
    """The last route: torchvision's CelebA downloader (Google Drive, through gdown), into
    a hidden folder beside dataroot, then renamed into place."""
    if importlib.util.find_spec("gdown") is None:  # torchvision needs it for Google Drive
        raise UserError("--download: no Hub copy could be used, and torchvision's Google "
                        "Drive route needs the gdown package (pip install gdown); "
                        f"{MANUAL_ROUTES}, and unzip it into {dataroot}")
    writable_folder("--dataroot", dataroot)
    work = tempfile.mkdtemp(prefix=".unpacking-", dir=dataroot)
    try:
        print("Downloading CelebA from Google Drive with torchvision (1.4 GB) ...")
        dset.CelebA(root=work, split="all", target_type=[], download=True)
        os.rename(os.path.join(work, "celeba", "img_align_celeba"),
                  os.path.join(dataroot, "img_align_celeba"))
    except Exception as error:  # any failure of the mirror ends in the manual route
        raise UserError(f"--download: Google Drive failed too ({first_line(error)}): it often refuses "
                        f"(quota); {MANUAL_ROUTES}, and unzip it into {dataroot}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def wait_for_download(dataroot, proc):
    """Under torchrun: rank 0 downloads while the others wait for the folder, polling the
    disk rather than a collective, whose timeout a long download would outlast."""
    if proc.writes or os.path.isdir(os.path.join(dataroot, "img_align_celeba")):
        return
    print(f"rank {proc.rank}: waiting for rank 0 to download CelebA into {dataroot}",
          file=sys.stderr, flush=True)
    while not os.path.isdir(os.path.join(dataroot, "img_align_celeba")):
        time.sleep(5)


# ----------------------------------------------------------------------------------------
# EMA: an exponential moving average of G's weights (--ema)
# ----------------------------------------------------------------------------------------

def ema_decay(decay, rampup, iteration):
    """StyleGAN2's EMA warm-up (ema_rampup): the average spans at most `rampup` times the
    training seen so far (a half-life of rampup x iterations), so that a short run's EMA
    does not drag the random initial weights along; `decay` once the run is long enough.
    It is 0 (the EMA is G) at iteration 0. rampup 0: `decay` throughout."""
    if not rampup:
        return decay
    if iteration == 0:
        return 0.0
    return min(decay, 0.5 ** (1 / (rampup * iteration)))


@torch.no_grad()
def update_ema(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * model for weights; BatchNorm buffers copied."""
    for averaged, current in zip(ema.parameters(), model.parameters()):
        averaged.lerp_(current, 1 - decay)
    for averaged, current in zip(ema.buffers(), model.buffers()):
        averaged.copy_(current)


def sampling_weights(checkpoint):
    """The generator weights that samples come from: the EMA's if the run kept one."""
    return checkpoint.get("ema") or checkpoint.get("netG")


# ----------------------------------------------------------------------------------------
# Better faces from the same compute: opt-in changes to the training (each off by default)
# ----------------------------------------------------------------------------------------

DIFFAUG_POLICIES = ("color", "translation", "cutout")


class DiffAugment:
    """--diffaug (Zhao et al., 2020, "Differentiable Augmentation for Data-Efficient GAN
    Training"): random colour, translation and cutout, drawn afresh for every image that D
    sees, real and fake, in D's step and in G's. Every operation is differentiable, so G
    learns through it; D never sees an unaugmented image, so it cannot learn the
    augmentations as a mark of fakes. Draws from the device's global random stream (a
    checkpoint saves it), and draws nothing when the policy is empty."""

    def __init__(self, policy):
        self.policy = [name for name in policy.split(",") if name and name != "none"]

    def __call__(self, x):
        for name in self.policy:
            x = getattr(self, name)(x)
        return x

    @staticmethod
    def color(x):
        """Brightness +-0.5, saturation x0..2, contrast x0.5..1.5 (images in [-1, 1])."""
        n = x.size(0)
        x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean

    @staticmethod
    def translation(x, ratio=0.125):
        """Shifts each image by up to 1/8 of its side in each direction; zeros come in."""
        n, _, h, w = x.shape
        dy, dx = (torch.randint(-round(side * ratio), round(side * ratio) + 1, (n, 1, 1),
                                device=x.device) for side in (h, w))
        # index into the image padded with one row and column of zeros on each side: a
        # source outside the image lands on the padding
        rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp_(0, h + 1)
        cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp_(0, w + 1)
        padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # N, H+2, W+2, C
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        return padded[batch, rows, cols].permute(0, 3, 1, 2)

    @staticmethod
    def cutout(x, ratio=0.5):
        """Zeroes one square of half the side at a random place in each image."""
        n, _, h, w = x.shape
        size_h, size_w = round(h * ratio), round(w * ratio)
        top = torch.randint(0, h + 1 - size_h % 2, (n, 1, 1), device=x.device) - size_h // 2
        left = torch.randint(0, w + 1 - size_w % 2, (n, 1, 1), device=x.device) - size_w // 2
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = ((rows >= top) & (rows < top + size_h)) & ((cols >= left) & (cols < left + size_w))
        return x * (~inside).unsqueeze(1).to(x.dtype)


class HingeLoss(nn.Module):
    """--loss hinge (Lim and Ye, 2017; SNGAN, BigGAN) on D's logits. D's criterion is
    called as the tutorial calls BCELoss, with the batch's label: mean relu(1 - D(x)) for
    real (label 1), mean relu(1 + D(G(z))) for fake (label 0). G's loss is -mean D(G(z))."""

    def forward(self, output, label):
        return F.relu(1 - (2 * label - 1) * output).mean()

    @staticmethod
    def generator_loss(output):
        return -output.mean()


def d_returns_logits(args):
    """D drops its Sigmoid for the hinge loss, and for --amp (BCEWithLogitsLoss)."""
    return args.loss == "hinge" or args.amp


def apply_spectral_norm(netD):
    """--spectral-norm (Miyato et al., 2018): each of D's convolutions divided by its
    largest singular value, estimated by one power iteration a step. D's BatchNorm layers
    become identities, as in SNGAN's D: they rescale each feature by the batch's spread,
    which would undo the bound. Shapes change, so a run cannot switch it on resume."""
    for index, layer in enumerate(netD.main):
        if isinstance(layer, nn.Conv2d):
            nn.utils.parametrizations.spectral_norm(layer)
        elif isinstance(layer, nn.BatchNorm2d):
            netD.main[index] = nn.Identity()


def learning_rates(args):
    """(D's, G's) Adam learning rate: --lr-d and --lr-g (TTUR, Heusel et al., 2017), each
    --lr when not given."""
    return (args.lr if args.lr_d is None else args.lr_d,
            args.lr if args.lr_g is None else args.lr_g)


# ----------------------------------------------------------------------------------------
# Checkpoints and exact resume
# ----------------------------------------------------------------------------------------

CHECKPOINT_FORMAT = "dcgan.py checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_FIELDS = ("config", "netG", "netD", "optimizerG", "optimizerD", "ema", "epoch",
                     "batch_in_epoch", "iteration", "batches_per_epoch", "world_size", "rng",
                     "epoch_rng", "fixed_noise", "metrics", "grids", "grid_iterations",
                     "evals", "elapsed")


def checkpoint_path(outdir):
    """Where a run keeps its checkpoint."""
    return os.path.join(outdir, "checkpoint.pt")


class RandomStreams:
    """The one place that knows what "the same random draws after resume" needs.

    A run draws from torch's CPU generator (each epoch's shuffle; the noise on the CPU),
    the device's generator (the noise on a GPU), numpy's and Python's. A checkpoint taken
    mid-epoch holds two snapshots of each rank: torch's CPU state just before the epoch's
    shuffle, so that the resumed run redraws the same shuffle, and every stream's state
    at the checkpoint, to continue from once that shuffle is drawn.
    """

    def __init__(self):
        self.before_shuffle = None  # torch's CPU state before this epoch's shuffle
        self.resume_from = None  # every stream's state, to continue with after it

    def epoch(self, dataloader, epoch, start):
        """dataloader.epoch(epoch, start), its shuffle drawn as the run drew it first."""
        if self.before_shuffle is not None:
            torch.set_rng_state(self.before_shuffle)
        self.before_shuffle = torch.get_rng_state()
        batches = dataloader.epoch(epoch, start)
        if self.resume_from is not None:
            self.set_states(self.resume_from)
            self.resume_from = None
        return batches

    def end_epoch(self):
        self.before_shuffle = None

    def state_dict(self, proc, mid_epoch):
        """Every rank's streams now ("rng") and its CPU state before the shuffle of the
        epoch that the next batch belongs to ("epoch_rng")."""
        before = self.before_shuffle if mid_epoch else torch.get_rng_state()
        return {"rng": gather(self.get_states(proc.device), proc), "epoch_rng": gather(before, proc)}

    def load_state_dict(self, saved, proc, mid_epoch, reseed=None):
        """Restores this rank's streams from state_dict(); with `reseed` (the data or the
        number of processes changed), seeds anew from it instead: no longer exact."""
        if reseed is None:
            states, before = saved["rng"][proc.rank], saved["epoch_rng"][proc.rank]
            if states["device_type"] != proc.device.type:  # CUDA-saved, CPU-loaded: keep the CPU streams
                states = dict(states, device=None, device_type=proc.device.type)
        else:
            torch.manual_seed(reseed)
            states, before = self.get_states(proc.device), torch.get_rng_state()
        if mid_epoch:  # the states follow the epoch's shuffle: redraw it first
            self.before_shuffle, self.resume_from = before, states
        else:
            self.set_states(states)

    @staticmethod
    def get_states(device):
        """Every generator in play, as plain tensors and lists (weights_only loads them)."""
        numpy_state = np.random.get_state()
        device_module = torch.get_device_module(device) if device.type != "cpu" else None
        return {
            "torch": torch.get_rng_state(),
            "device": (None if device_module is None else device_module.get_rng_state(device)
                       if device.type == "cuda" else device_module.get_rng_state()),
            "device_type": device.type,
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)),
                      *numpy_state[2:]],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        }

    @staticmethod
    def set_states(states):
        torch.set_rng_state(states["torch"])
        if states["device"] is not None:
            module = torch.get_device_module(states["device_type"])
            if states["device_type"] == "cuda":
                module.set_rng_state(states["device"], torch.cuda.current_device())
            else:
                module.set_rng_state(states["device"])
        np.random.set_state((states["numpy"][0], states["numpy"][1].numpy().astype(np.uint32),
                             *states["numpy"][2:]))
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path, args, state, proc, num_batches, data):
    """Writes the one checkpoint dict that resumes the run exactly (rank 0 writes it;
    every rank contributes its random streams)."""
    state.metrics.flush()  # the checkpoint's rows and metrics.csv agree
    streams = state.random.state_dict(proc, mid_epoch=state.batch_in_epoch > 0)
    if not proc.writes:
        return
    checkpoint = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "config": vars(args),
        "netG": state.netG.state_dict(), "netD": state.netD.state_dict(),
        "optimizerG": state.optimizerG.state_dict(), "optimizerD": state.optimizerD.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
        "iteration": state.iteration, "batches_per_epoch": num_batches,
        "world_size": proc.world_size, **streams, "data": data,
        "fixed_noise": state.fixed_noise.cpu(),
        "metrics": state.metrics.rows,
        "grids": state.img_list, "grid_iterations": state.img_iterations,
        "evals": state.evals, "health": state.health, "elapsed": state.seconds(),
    }
    try:
        atomic_write(path, lambda f: torch.save(checkpoint, f))
    except OSError as error:
        raise UserError(f"cannot write {path} ({reason(error)}); the previous checkpoint "
                        "is intact; free some space and resume") from None


def load_checkpoint(path, device="cpu", flag="--checkpoint", whole=False):
    """torch.load with weights_only=True: a file that would run code is refused, never run.
    whole: only a complete training checkpoint will do (--resume), not network weights."""
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path}: no such file; train first, or give the path of a "
                        "checkpoint.pt or netG.pt")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            raise UserError(f"{flag} {path}: refused: the file holds Python objects that "
                            "would run code when loaded; dcgan.py loads only tensors, "
                            "numbers and text (use a checkpoint that dcgan.py wrote)") from None
        raise UserError(f"{flag} {path}: not a PyTorch file (corrupt?)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as error:  # what unpickling garbage raises
        detail = first_line(error)[:120]
        raise UserError(f"{flag} {path}: cannot be read: truncated or corrupt "
                        f"({detail}); use an intact copy") from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{flag} {path}: not a dcgan.py checkpoint or generator weights")
    if "format" in checkpoint and (checkpoint["format"] != CHECKPOINT_FORMAT
                                   or checkpoint.get("version") != CHECKPOINT_VERSION):
        raise UserError(f"{flag} {path}: a checkpoint of another program or version "
                        f"({checkpoint['format']!r})")
    if "format" not in checkpoint and not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise UserError(f"{flag} {path}: not a dcgan.py checkpoint (it has none of its "
                        "fields) and not a state dict of weights")
    if whole and "format" not in checkpoint:
        raise UserError(f"{flag} {path}: this file holds only network weights; resume "
                        "needs the checkpoint.pt that training writes beside it")
    missing = [key for key in CHECKPOINT_FIELDS if whole and key not in checkpoint]
    if missing:
        raise UserError(f"{flag} {path}: a damaged checkpoint: it lacks {', '.join(missing)}; "
                        "use an intact copy")
    return checkpoint


def check_same_data(checkpoint, images, args, proc):
    """A resumed run repeats the uninterrupted one only on the same images: refuses
    changed ones unless --allow-changed-data (checkpoints before this check pass)."""
    saved = checkpoint.get("data")
    if saved is None or saved["digest"] == file_digest(images):
        return
    what = (f"{saved['images']} images then, {len(images)} now" if saved["images"] != len(images)
            else f"as many images, {len(images)}, but a name, a size or a modification time differs")
    if not args.allow_changed_data:
        raise UserError(f"--resume {args.resume}: the images in --dataroot {args.dataroot} "
                        f"changed since the checkpoint ({what}), so the run would not continue "
                        "as it would have; restore them, or give --allow-changed-data to go on "
                        "with these")
    proc.log(f"note: the images changed since the checkpoint ({what}); continuing on them, "
             "as --allow-changed-data asks: the run is no longer the uninterrupted one")


def restore_training(state, checkpoint, args, proc, num_batches):
    """Loads a checkpoint into the freshly built training state."""
    state.netG.load_state_dict(checkpoint["netG"])
    state.netD.load_state_dict(checkpoint["netD"])
    load_optimizer_state(state.optimizerG, checkpoint["optimizerG"])
    load_optimizer_state(state.optimizerD, checkpoint["optimizerD"])
    if state.ema is not None:  # --ema may be turned on mid-run: it starts from G
        state.ema.load_state_dict(sampling_weights(checkpoint))
    state.fixed_noise.copy_(checkpoint["fixed_noise"])
    state.img_list, state.img_iterations = list(checkpoint["grids"]), list(checkpoint["grid_iterations"])
    state.evals, state.elapsed, state.started = checkpoint["evals"], checkpoint["elapsed"], time.time()
    state.health = list(checkpoint.get("health", []))  # older checkpoints have none
    state.iteration = checkpoint["iteration"]
    state.epoch, state.batch_in_epoch = checkpoint["epoch"], checkpoint["batch_in_epoch"]
    if state.batch_in_epoch >= num_batches:  # saved after an epoch's last batch
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    reseed = None
    if checkpoint["world_size"] != proc.world_size or checkpoint["batches_per_epoch"] != num_batches:
        proc.log("note: the dataset size or the number of processes changed since the "
                 "checkpoint; the run continues, but not as the uninterrupted run would have")
        reseed = args.seed + proc.rank + checkpoint["iteration"]
    state.random.load_state_dict(checkpoint, proc, mid_epoch=state.batch_in_epoch > 0, reseed=reseed)
    proc.log(f"Resuming {args.resume} at epoch {state.epoch}, batch {state.batch_in_epoch} "
             f"(iteration {state.iteration})")


def load_optimizer_state(optimizer, saved):
    """Adam's moments and steps from a checkpoint; lr and betas stay as built (from --lr,
    --lr-d, --lr-g, --beta1), so that a resume may change them."""
    built = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, hyperparameters in zip(optimizer.param_groups, built):
        group.update(hyperparameters)


def generator_from_weights(state_dict, path):
    """Rebuilds the Generator that a state dict (netG.pt, the tutorial's own, or a
    checkpoint's) belongs to, from the shapes of its weights."""
    state_dict = {k.removeprefix("module.").removeprefix("_orig_mod."): v
                  for k, v in state_dict.items()}
    convs = [v for k, v in state_dict.items() if k.startswith("main.") and v.dim() == 4]
    try:
        nz, ngf, nc = convs[0].shape[0], convs[-1].shape[0], convs[-1].shape[1]
        netG = Generator(nz, ngf, nc, image_size=4 * 2 ** (len(convs) - 1))
        netG.load_state_dict(state_dict)
    except (IndexError, RuntimeError, ValueError):
        raise UserError(f"--checkpoint {path}: does not hold a DCGAN generator of this "
                        "program's architecture") from None
    return netG


def generator_from_checkpoint(path, device):
    """(G, config) from checkpoint.pt (its EMA generator if it has one) or netG.pt."""
    checkpoint = load_checkpoint(path, device)
    if checkpoint.get("format") == CHECKPOINT_FORMAT:
        weights = sampling_weights(checkpoint)
        if weights is None:
            raise UserError(f"--checkpoint {path}: a damaged checkpoint: it holds no generator; "
                            "use an intact copy, or netG.pt")
        return generator_from_weights(weights, path).to(device), checkpoint.get("config", {})
    return generator_from_weights(checkpoint, path).to(device), {}


# ----------------------------------------------------------------------------------------
# Metrics: the statistics of every iteration; the sliced Wasserstein distance (Karras et
# al., 2018, Progressive GAN) of G's images to real ones
# ----------------------------------------------------------------------------------------

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


def summary_writer():
    """TensorBoard's SummaryWriter class, or one line that says how to get it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install "
                        "tensorboard (or drop --tensorboard)") from None
    return SummaryWriter


def log_scalars(writer, rows):
    for epoch, iteration, loss_d, loss_g, d_x, d_g_z1, d_g_z2, _ in rows:
        writer.add_scalars("loss", {"D": loss_d, "G": loss_g}, iteration)
        writer.add_scalars("D_output", {"D(x)": d_x, "D(G(z)) before D step": d_g_z1,
                                        "D(G(z)) after D step": d_g_z2}, iteration)


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


class SWDEvaluator:
    """SWD of G's images against a fixed set of real ones (held-out, or training images),
    beside the real-vs-real floor (a disjoint set of training images against the same set).
    It draws from generators of its own: evaluation changes no training number."""

    def __init__(self, images, pixels, held_out, args, device, log=print):
        self.nz, self.device, self.seed, self.log = args.nz, device, args.seed, log
        order = torch.randperm(len(images) if pixels is None else len(pixels),
                               generator=torch.Generator().manual_seed(args.seed))
        if held_out is not None:
            n = min(args.eval_samples or EVAL_SAMPLES, len(held_out), len(order))
            held_order = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(args.seed))
            self.real = real_uint8(held_out, None, held_order[:n].tolist(), args.workers)
            other = real_uint8(images, pixels, order[:len(self.real)].tolist(), args.workers)
        else:
            n = min(args.eval_samples or EVAL_SAMPLES, len(order) // 2)
            self.real = real_uint8(images, pixels, order[:n].tolist(), args.workers)
            other = real_uint8(images, pixels, order[n:2 * n].tolist(), args.workers)
        n = min(len(self.real), len(other))
        self.real, other = self.real[:n], other[:n]
        self.noise = torch.randn(n, self.nz, 1, 1, generator=torch.Generator().manual_seed(args.seed))
        self.floor = swd(self.real.to(device), other.to(device), seed=args.seed)
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


def save_eval_curves(evals, outdir):
    """swd.png and fid.png: each measured metric over the run, beside its floor."""
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


# ----------------------------------------------------------------------------------------
# FID and KID: the field's yardstick, computed by torch-fidelity
# ----------------------------------------------------------------------------------------

FID_SAMPLES = 50_000  # generated images in the usual protocol, against all real images
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's Inception
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


class GeneratorImages(torch_fidelity.GenerativeModelBase):
    """G as torch-fidelity samples it: z from its seeded normal noise, uint8 images out,
    straight from G in batches (no files)."""

    def __init__(self, netG):
        super().__init__()
        self.netG = netG

    @property
    def z_size(self):
        return self.netG.nz

    @property
    def z_type(self):
        return "normal"

    @property
    def num_classes(self):
        return 0

    def forward(self, z):
        return to_rgb(generated_uint8(self.netG, z.view(len(z), -1, 1, 1), len(z)).to(z.device))


class PixelImages(torch.utils.data.Dataset):
    """uint8 images (the decode-once cache's rows) as torch-fidelity reads them."""

    def __init__(self, pixels):
        self.pixels = pixels

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, index):
        return to_rgb(self.pixels[index])


def to_rgb(images):
    """Inception takes three channels: a grayscale image is repeated."""
    return images.expand(*images.shape[:-3], 3, *images.shape[-2:]) if images.shape[-3] == 1 else images


def inception_weights(path):
    """The Inception weights to hand torch-fidelity: --fid-weights, or the copy in torch's
    hub cache (downloaded there once). Loaded with weights_only=True first: a file that
    would run code is refused, never run. One line when they cannot be had."""
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILE)
    if not path and not os.path.isfile(cached):
        try:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            torch.hub.download_url_to_file(INCEPTION_URL, cached, progress=False)
        except (OSError, ValueError) as error:  # URLError is an OSError
            raise UserError(f"FID and KID need torch-fidelity's Inception weights, {INCEPTION_FILE} "
                            f"(92 MB), which cannot be downloaded here ({reason(error)}); on a "
                            f"machine with network fetch {INCEPTION_URL} and give it with "
                            f"--fid-weights PATH, or put it in {os.path.dirname(cached)}") from None
    path = path or cached
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"--fid-weights {path}: no such file; give the path of {INCEPTION_FILE}") from None
    except pickle.UnpicklingError:
        raise UserError(f"--fid-weights {path}: refused: the file holds Python objects that would "
                        f"run code when loaded; use torch-fidelity's {INCEPTION_FILE}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise UserError(f"--fid-weights {path}: not a PyTorch weights file ({reason(error)})") from None
    return path


class FidelityEvaluator:
    """FID and KID (torch-fidelity, standard Inception) of G's images against all real
    images (held-out, or training images) at the training size, beside the real-vs-real
    floor (two disjoint halves of them). The real images' statistics are cached beside the
    pixel cache, once per dataset and size. torch-fidelity draws from its own seeded
    generator: evaluation changes no training number."""

    def __init__(self, real, real_key, metrics, args, device, log=print):
        self.metrics, self.device, self.log = metrics, device, log
        self.seed, self.weights = args.seed, inception_weights(args.fid_weights)
        limit = args.eval_samples
        self.real = real[:limit] if limit else real
        self.generated = limit or FID_SAMPLES
        self.protocol = (f"{self.generated} generated vs {len(self.real)} real images, "
                         f"{real.shape[-1]} px")
        if limit:
            self.protocol += ("; not comparable with papers, which use 50,000 generated "
                              "images against all real ones")
        # the real images' statistics, cached beside the pixel cache: once per dataset and size
        self.cache_root = os.path.join(cache_folder(args.cache_dir), "fidelity")
        self.real_name = f"dcgan-real-{real_key}-{len(self.real)}"
        self.floor = self._score(PixelImages(self.real[0::2]), PixelImages(self.real[1::2]),
                                 input1_cache_name=f"{self.real_name}-even",
                                 input2_cache_name=f"{self.real_name}-odd")
        log(f"FID/KID floor (real vs real, two halves of {len(self.real)} images): "
            f"{format_fidelity(self.floor)}")

    def _score(self, input1, input2, **names):
        return fidelity_scores(input1, input2, self.metrics, self.weights, self.device,
                               self.seed, self.cache_root, **names)

    def measure(self, netG, iteration):
        """The eval.csv columns of G at this iteration: FID and KID, and their floors."""
        scores = self._score(GeneratorImages(netG), PixelImages(self.real),
                             input1_model_num_samples=self.generated, input2_cache_name=self.real_name)
        self.log(f"[iteration {iteration}] {format_fidelity(scores)} ({self.protocol}; floor "
                 f"{format_fidelity(self.floor)})")
        row = {k: v for k, v in scores.items() if v is not None}
        row.update({f"floor_{k}": v for k, v in self.floor.items() if v is not None})
        return row


def fidelity_evaluator(images, pixels, held_out, args, device, log=print):
    """A FidelityEvaluator against all real images, the held-out ones or else the training
    ones, from the decode-once cache (with --no-cache, decoded once for it)."""
    real_images = held_out if held_out is not None else images
    if held_out is None and pixels is not None:
        real = pixels
    elif getattr(args, "no_cache", False):
        real = real_uint8(real_images, None, list(range(len(real_images))), args.workers)
    else:
        real = load_pixel_cache(real_images, args.image_size, args.nc, args.cache_dir, args.workers)
    key = os.path.basename(cache_path(real_images, args.image_size, args.nc, ""))[:-len(".npy")]
    return FidelityEvaluator(real, key, metric_names(args), args, device, log)


def metric_names(args):
    """The metrics asked for: --eval-metrics in training, --metrics in evaluate."""
    return tuple((getattr(args, "metrics", None) or args.eval_metrics).split(","))


def fidelity_scores(input1, input2, metrics, weights, device, seed, cache_root, **names):
    """{"fid": ..., "kid": ...} (None where not asked) of two inputs, by torch-fidelity.
    torch's global random stream is left as it was (its DataLoader draws a seed from it)."""
    count = len(input2) if isinstance(input1, GeneratorImages) else min(len(input1), len(input2))
    count = min(count, names.get("input1_model_num_samples", count))
    with torch.random.fork_rng(devices=[]):
        result = torch_fidelity.calculate_metrics(
            input1=input1, input2=input2, fid="fid" in metrics, kid="kid" in metrics,
            kid_subset_size=min(1000, count), cuda=device.type == "cuda", rng_seed=seed,
            feature_extractor_weights_path=weights, save_cpu_ram=True, verbose=False,
            cache_root=cache_root, **names)
    return {"fid": result.get(torch_fidelity.KEY_METRIC_FID) if "fid" in metrics else None,
            "kid": result.get(torch_fidelity.KEY_METRIC_KID_MEAN) if "kid" in metrics else None}


def evaluators(images, pixels, held_out, args, device, log=print):
    """The evaluators that --eval-metrics (evaluate: --metrics) asks for, in its order."""
    names = metric_names(args)
    found = [SWDEvaluator(images, pixels, held_out, args, device, log)] if "swd" in names else []
    if "fid" in names or "kid" in names:
        found.append(fidelity_evaluator(images, pixels, held_out, args, device, log))
    return found


def measure_all(evaluators, netG, iteration):
    """One eval.csv row: every evaluator's columns for G at this iteration."""
    row = {"iteration": iteration}
    for evaluator in evaluators:
        row.update(evaluator.measure(netG, iteration))
    return row


def format_fidelity(scores):
    return ", ".join(f"{name.upper()} {value:.4g}" for name, value in scores.items() if value is not None)


# ----------------------------------------------------------------------------------------
# Health: saying, while it happens, that a run is failing, and what to try
# ----------------------------------------------------------------------------------------

# The thresholds, from runs on the 8,000-face sample (the README's "When a run goes wrong")
HEALTH_WINDOW = 50  # iterations that a verdict on the losses looks back over
D_WON_LOSS, D_WON_SHARE = 0.001, 0.9  # Loss_D below this in this share of the window
FLAT_LOSSES = 1e-3  # both losses moved less than this over the window
COLLAPSE_SPREAD = 0.1  # fixed-noise images this close (vs a real batch's spread), two grids running
FAILURE_EXIT = 3  # --on-failure stop: the exit status
HEALTH_README = "see the README, \"When a run goes wrong\""


class HealthMonitor:
    """Three signs that a run is lost, each said once, when it first shows: D has won
    (Loss_D near 0 in almost every iteration of the window), G has collapsed (its
    fixed-noise images are near copies of each other, measured against a real batch),
    no learning (both losses flat: a learning rate far too high). It reads only the
    statistics and the grids the loop already has: it draws no random number and changes
    no training state. Events go to stdout, health.csv, TensorBoard and the checkpoint."""

    def __init__(self, args, real_images, events=(), recent_rows=()):
        self.args, self.events = args, [dict(e) for e in events]
        self.real_spread = image_spread(to_rgb(real_images).float())  # grids are RGB
        self.recent = list(recent_rows)[-HEALTH_WINDOW:]
        self.last_spread = math.inf  # of the last grid, relative to the real batch's

    def observe_rows(self, rows):
        """The new metrics rows; returns the events they set off."""
        found = []
        for row in rows:
            self.recent = (self.recent + [row])[-HEALTH_WINDOW:]
            if len(self.recent) == HEALTH_WINDOW:
                found += self._check_losses(row[1])
        return found

    def observe_grid(self, iteration, grid):
        """A fixed-noise grid; returns the event it sets off, if any."""
        ratio = image_spread(grid_images(grid, self.args.image_size).float()) / self.real_spread
        previous, self.last_spread = self.last_spread, ratio
        if max(ratio, previous) >= COLLAPSE_SPREAD:  # early grids can be alike for a while
            return []
        return self._fire(iteration, "g_collapsed", ratio, (
            f"G has collapsed: its 64 fixed-noise images are near copies of each other (their "
            f"mean distance is {ratio:.2f} of a real batch's, below {COLLAPSE_SPREAD} in two "
            "grids running). What usually helps: --loss hinge --ema 0.999, or --diffaug, from an "
            "earlier checkpoint or afresh"))

    def _check_losses(self, iteration):
        loss_d = [row[2] for row in self.recent]
        loss_g = [row[3] for row in self.recent]
        found = []
        won = sum(value < D_WON_LOSS for value in loss_d)
        if won >= D_WON_SHARE * HEALTH_WINDOW:
            lr_d = self.args.lr if self.args.lr_d is None else self.args.lr_d
            found += self._fire(iteration, "d_won", won / HEALTH_WINDOW, (
                f"D has won: Loss_D was below {D_WON_LOSS} in {won} of the last "
                f"{HEALTH_WINDOW} iterations (D(G(z)) {self.recent[-1][5]:.4f}), so G gets no "
                f"gradient it can learn from. What usually helps: a slower D (--lr-d "
                f"{lr_d / 2:g}), --loss hinge --ema 0.999, or --diffaug"))
        spread = max(max(loss_d) - min(loss_d), max(loss_g) - min(loss_g))
        if spread < FLAT_LOSSES:
            found += self._fire(iteration, "no_learning", spread, (
                f"the run has stopped learning: over the last {HEALTH_WINDOW} iterations "
                f"Loss_D stayed at {loss_d[-1]:.4f} and Loss_G at {loss_g[-1]:.4f} (they moved "
                f"by less than {FLAT_LOSSES}), as when the learning rate is far too high "
                f"(--lr {self.args.lr:g}); start again with the tutorial's --lr 0.0002"))
        return found

    def _fire(self, iteration, signal_name, value, text):
        if any(e["signal"] == signal_name for e in self.events):
            return []  # said once; a resumed run keeps its history
        event = {"iteration": iteration, "signal": signal_name, "value": float(value),
                 "message": f"warning: iteration {iteration}: {text}; {HEALTH_README}"}
        self.events.append(event)
        return [event]


def image_spread(images):
    """The mean distance between two different images of a batch (flattened pixels)."""
    flat = images.flatten(1).double()
    n = len(flat)
    return (torch.cdist(flat, flat).sum() / (n * (n - 1))).item()


def grid_images(grid, size, columns=8, padding=2):
    """The images of a make_grid grid (nrow 8, padding 2), as N x C x size x size."""
    step = size + padding
    rows = (grid.shape[1] - padding) // step
    return torch.stack([grid[:, padding + r * step:padding + r * step + size,
                             padding + c * step:padding + c * step + size]
                        for r in range(rows) for c in range(columns)])


def write_health_csv(path, events):
    atomic_write(path, lambda f: f.write(csv_text(
        [["iteration", "signal", "value", "message"]]
        + [[e["iteration"], e["signal"], e["value"], e["message"]] for e in events]).encode()))


# ----------------------------------------------------------------------------------------
# The run: every input checked before anything is written, the outdir held, the extras
# around the training loop
# ----------------------------------------------------------------------------------------

def open_inputs(args, proc, checkpoint):
    """Checks every input before anything is written: downloads CelebA when asked, opens
    the dataset and the held-out one (or None), compares them with a resumed run's, and
    sizes the networks against the device's memory. Returns both datasets."""
    if args.download or args.download_from:
        if proc.writes:
            download_celeba(args.dataroot, args.download_from)
        else:
            wait_for_download(args.dataroot, proc)
    barrier(proc)
    images = make_dataset(args.dataroot, args.image_size, args.nc)
    held_out = open_eval_images(args, images) if args.eval_every else None
    if args.eval_every and {"fid", "kid"} & set(metric_names(args)):
        inception_weights(args.fid_weights)  # or one line: before anything is written
    if checkpoint is not None:
        check_same_data(checkpoint, images, args, proc)
    check_network_memory(args, proc)
    if args.tensorboard:
        summary_writer()
    return images, held_out


def start_run(args, proc, checkpoint):
    """Once every input is checked: takes the outdir for this run, prints the configuration
    and writes config.json. Returns the run's Outputs, to hold (with) for the whole run."""
    outputs = Outputs(args.outdir)
    if proc.writes:
        with contextlib.ExitStack() as undo:  # on an error here, the outdir is let go
            undo.callback(outputs.close)
            writable_folder("--outdir", args.outdir)
            os.makedirs(outputs.path("progress"), exist_ok=True)
            if not outputs.lock():
                proc.log("note: no file locks here (fcntl); nothing stops a second run from "
                         "writing into the same --outdir")
            if checkpoint is None and os.path.exists(checkpoint_path(args.outdir)):
                raise UserError(f"--outdir {args.outdir}: holds the checkpoint of an earlier "
                                "run; continue it with --resume, or start afresh in another "
                                f"--outdir (or after deleting {checkpoint_path(args.outdir)})")
            if args.tensorboard:
                outputs.tensorboard = summary_writer()(outputs.path("tensorboard"))
            proc.log("Configuration:")
            for key, value in vars(args).items():
                proc.log(f"  {key}: {value}")
            proc.log(f"  (device: {proc.device}, processes: {proc.world_size}, torch {torch.__version__})")
            atomic_write(outputs.path("config.json"),
                         lambda f: f.write(json.dumps(vars(args), indent=2).encode()))
            undo.pop_all()
    return outputs


class Outputs(contextlib.AbstractContextManager):
    """The run's hold on --outdir: an exclusive lock on OUTDIR/run.lock for the whole run,
    so that a second run there stops at once, and the TensorBoard writer."""

    def __init__(self, outdir):
        self.outdir, self.lock_file, self.tensorboard = outdir, None, None

    def path(self, *names):
        return os.path.join(self.outdir, *names)

    def lock(self):
        """Takes the lock, or says in one line which run holds it. False without fcntl."""
        self.lock_file = take_lock(self.path("run.lock"), wait=False)
        if self.lock_file is None:
            with open(self.path("run.lock")) as f:
                holder = f.read().strip() or "another process"
            raise UserError(f"--outdir {self.outdir}: another run is writing there ({holder}); "
                            "wait for it to end or stop it, or choose another --outdir")
        self.lock_file.truncate(0)
        self.lock_file.write(f"PID {os.getpid()} on {socket.gethostname()}, since "
                             f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.lock_file.flush()
        return fcntl is not None

    def close(self):
        if self.tensorboard:
            self.tensorboard.close()
            self.tensorboard = None
        if self.lock_file:
            self.lock_file.close()  # lets go of the lock
            self.lock_file = None

    def __exit__(self, *exc):
        self.close()


def prepare_training(state, args, proc, checkpoint, num_batches):
    """Set-up before the loop: the EMA generator, the checkpoint's state, the metrics
    file, and the networks as the step runs them (channels-last, autocast, compile, DDP)."""
    broadcast(state.fixed_noise, proc)  # every rank draws the grids (SyncBatchNorm): same noise
    if args.ema is not None:
        state.ema = copy.deepcopy(state.netG).requires_grad_(False)  # averaged, never trained
    if args.diffaug:
        state.augment = DiffAugment(args.diffaug)
    if checkpoint is not None:
        restore_training(state, checkpoint, args, proc, num_batches)
    state.metrics = Metrics(os.path.join(args.outdir, "metrics.csv"),
                            checkpoint["metrics"] if checkpoint else [], write=proc.writes)
    state.trainG = prepare_for_training(state.netG, args, proc)
    state.trainD = prepare_for_training(state.netD, args, proc, logits=state.logits)


class Extras:
    """What this program adds around the tutorial's loop, each as one call from it: the EMA,
    the progress bar, TensorBoard, grids on disk, SWD, checkpoints, stopping on a signal.
    None changes the loop's position. A context manager: it holds the signal handlers."""

    def __init__(self, args, proc, state, images, pixels, held_out, outputs, num_batches):
        self.args, self.proc, self.state = args, proc, state
        self.tensorboard, self.out = outputs.tensorboard, outputs.path
        self.checkpoint_file, self.num_batches = checkpoint_path(args.outdir), num_batches
        # what the checkpoint records of the data, so that a resume can tell a change
        self.data = {"images": len(images), "digest": file_digest(images)}
        self.evaluators = evaluators(images, pixels, held_out, args, proc.device, proc.log) \
            if args.eval_every and proc.writes else []
        count = len(images) if pixels is None else len(pixels)
        self.health = (HealthMonitor(args, real_uint8(images, pixels, list(range(min(64, count))),
                                                      args.workers), state.health, state.metrics.rows)
                       if proc.writes else None)
        if proc.writes:
            write_eval_csv(self.out("eval.csv"), state.evals)
            write_health_csv(self.out("health.csv"), state.health)
        self.bar = tqdm(total=args.num_epochs * num_batches, initial=state.iteration, unit="img",
                        unit_scale=args.batch_size, dynamic_ncols=True,
                        disable=None if proc.writes else True)
        self.stop = StopRequest(proc)
        self.epoch_steps, self.epoch_clock = 0, time.time()
        self.logged_rows = len(state.metrics.rows)

    def __enter__(self):
        self.stop.__enter__()
        return self

    def __exit__(self, *exc):
        self.stop.__exit__(*exc)
        if self.epoch_steps and exc[0] is None:
            self._epoch_summary(self.state.epoch)
        self.bar.close()
        if self.tensorboard:
            self.after_stats()

    def after_step(self):
        if self.state.ema is not None:
            decay = ema_decay(self.args.ema, self.args.ema_rampup, self.state.iteration - 1)
            update_ema(self.state.ema, self.state.netG, decay)
        self.bar.update(1)
        self.epoch_steps += 1

    def after_stats(self):
        """Gives TensorBoard and the health monitor the rows that reached the host since
        the last call (a checkpoint brings rows to the host too)."""
        rows = self.state.metrics.rows[self.logged_rows:]
        self.logged_rows = len(self.state.metrics.rows)
        if self.tensorboard:
            log_scalars(self.tensorboard, rows)
        if self.health:
            self._report(self.health.observe_rows(rows))

    def after_grid(self):
        iteration, grid = self.state.img_iterations[-1], self.state.img_list[-1]
        if self.proc.writes:
            save_grid(grid, self.out("progress", f"iter_{iteration:07d}.png"))
        if self.tensorboard:
            self.tensorboard.add_image("fixed_noise", grid, iteration)
        if self.health:
            self._report(self.health.observe_grid(iteration, grid))

    def _report(self, events):
        """The health monitor's warnings: said once, recorded, and with --on-failure
        stop, a stop after this iteration."""
        for event in events:
            self.proc.log(event["message"])
            if self.tensorboard:
                self.tensorboard.add_text("health", event["message"], event["iteration"])
        if events:
            self.state.health = self.health.events
            write_health_csv(self.out("health.csv"), self.state.health)
            if self.args.on_failure == "stop":
                self.stop.stop_for_failure()

    def measure(self, iters, last):
        """--eval-metrics every --eval-every iterations and at the end, into eval.csv."""
        if self.evaluators and (iters % self.args.eval_every == 0 or last):
            self.state.evals.append(measure_all(self.evaluators, self.state.sampleG, iters))
            write_eval_csv(self.out("eval.csv"), self.state.evals)
            for key in ("swd_avg", "fid", "kid"):
                if self.tensorboard and key in self.state.evals[-1]:
                    self.tensorboard.add_scalar(key, self.state.evals[-1][key], iters)

    def save_checkpoint(self, iters, due=False):
        """Writes checkpoint.pt when due (the end, a stop) or every --checkpoint-every."""
        if due or iters % self.args.checkpoint_every == 0:
            self.save()

    def end_epoch(self, epoch):
        self._epoch_summary(epoch)
        self.save()

    def save(self):
        with self.stop.deferred():  # a second signal now waits for the file to be whole
            save_checkpoint(self.checkpoint_file, self.args, self.state, self.proc,
                            self.num_batches, self.data)

    def _epoch_summary(self, epoch):
        """Without a progress bar (not a terminal), one line per epoch on stderr."""
        if self.proc.writes and self.bar.disable:
            took = time.time() - self.epoch_clock
            print(f"epoch {epoch}/{self.args.num_epochs}: {self.epoch_steps} iterations in "
                  f"{took:.0f} s, {self.epoch_steps * self.args.batch_size / max(took, 1e-9):.1f} "
                  "images/s", file=sys.stderr)
        self.epoch_steps, self.epoch_clock = 0, time.time()

    def stopped(self):
        """After a signal (or a failure, with --on-failure stop): says how to resume;
        returns the exit status, 128 + the signal's number (or FAILURE_EXIT)."""
        failed = self.stop.signum == FAILURE_STOP
        how = (f"after iteration {self.state.iteration}: the run is failing (--on-failure stop)"
               if failed else f"by {signal.Signals(self.stop.signum).name} after iteration "
               f"{self.state.iteration}")
        self.proc.log(f"Stopped {how}; checkpoint written to {self.checkpoint_file}. Resume "
                      f"with: python dcgan.py --resume {self.checkpoint_file}")
        finish_distributed(self.proc)
        return FAILURE_EXIT if failed else 128 + self.stop.signum

    def diverged(self, error):
        iteration = self.state.iteration if error.iteration is None else error.iteration
        path = self.checkpoint_file
        advice = (f"the last good checkpoint, {path}, is intact; resume from it with a lower "
                  "--lr" if os.path.exists(path) else "no checkpoint was written before it; "
                  "start again with a lower --lr")
        return UserError(f"training diverged at iteration {iteration}: a loss or D output "
                         f"became NaN or infinite; {advice}")


# ----------------------------------------------------------------------------------------
# Sampling and evaluation: the generate and evaluate commands
# ----------------------------------------------------------------------------------------

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


def generate(args):
    """The generate command: a grid (and single files) or a latent walk. Images are made
    and written --batch-size at a time, so memory does not grow with --num-samples."""
    device = pick_device(args.device)
    netG, _ = generator_from_checkpoint(args.checkpoint, device)
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


def evaluate(args):
    """The evaluate command: --metrics (SWD, FID, KID) of a finished model, as training
    computes them."""
    device = pick_device(args.device)
    netG, config = generator_from_checkpoint(args.checkpoint, device)
    given = {k: getattr(args, k) for k in ("dataroot", "eval_dataroot", "eval_samples",
                                            "seed", "cache_dir") if getattr(args, k) is not None}
    # the flags given here, else the training run's, else training's defaults
    defaults = dict(dataroot=TUTORIAL_INPUTS["dataroot"], eval_dataroot=None,
                    eval_samples=None, seed=TUTORIAL_INPUTS["seed"], cache_dir=None)
    cfg = argparse.Namespace(**defaults)
    vars(cfg).update({k: v for k, v in config.items() if k in defaults}, **given)
    vars(cfg).update(workers=args.workers, nz=netG.nz, nc=netG.nc, image_size=netG.image_size,
                     metrics=args.metrics, fid_weights=args.fid_weights)
    images = make_dataset(cfg.dataroot, cfg.image_size, cfg.nc)
    held_out = open_eval_images(cfg, images)
    pixels = load_pixel_cache(images, cfg.image_size, cfg.nc, cfg.cache_dir, cfg.workers)
    row = measure_all(evaluators(images, pixels, held_out, cfg, device), netG, "final")
    if "swd_avg" in row:
        print(f"swd_avg {row['swd_avg']:.2f} (floor {row['floor_avg']:.2f})")
    for key in ("fid", "kid"):
        if key in row:
            print(f"{key} {row[key]:.4g} (floor {row['floor_' + key]:.4g})")
    return 0


# ----------------------------------------------------------------------------------------
# Command line, the configuration resolved once, and the entry point
# ----------------------------------------------------------------------------------------

# Settings that define the models' shapes or the meaning of an iteration: a resumed run
# cannot change them.
FIXED_ON_RESUME = ("nz", "ngf", "ndf", "nc", "image_size", "batch_size", "spectral_norm")
# Flags that steer one invocation only; a resumed run does not inherit them.
PER_INVOCATION = ("resume", "max_iters", "download", "download_from", "allow_changed_data")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a UserError: one line, no usage block."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, unless it has none or its help already says it."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def number(name, convert, accept, requirement):
    """An argparse type: `convert` the text, then refuse a value that `accept` rejects
    with "must be <requirement>, not <text>". argparse names a failed conversion by
    `name` ("invalid positive_int value: 'two'")."""
    def parse(text):
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, not {text}")
        return value
    parse.__name__ = name
    return parse


positive_int = number("positive_int", int, lambda v: v >= 1, "a whole number of at least 1")
non_negative_int = number("non_negative_int", int, lambda v: v >= 0, "a whole number of at least 0")
at_least_two = number("at_least_two", int, lambda v: v >= 2, "at least 2")
positive_float = number("positive_float", float, lambda v: v > 0 and not math.isinf(v), "a positive number")
unit_interval = number("unit_interval", float, lambda v: 0 <= v < 1, "at least 0 and below 1")


def diffaug_policy(text):
    """--diffaug's value: a comma-separated subset of DIFFAUG_POLICIES, or 'none'."""
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in DIFFAUG_POLICIES + ("none",)]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a DiffAugment policy: give a comma-separated subset of "
            f"{','.join(DIFFAUG_POLICIES)}, or none")
    return ",".join(names)


def metric_list(text):
    """--eval-metrics' and --metrics' value: a comma-separated subset of swd,fid,kid."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(name not in ("swd", "fid", "kid") for name in names):
        raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated subset of swd,fid,kid")
    return ",".join(dict.fromkeys(names))


# torch seeds are 64-bit; each rank, and a reseeded resume, adds a little to it
seed_number = number("seed_number", int, lambda v: 0 <= v < 2 ** 63,
                     f"a whole number from 0 to {2 ** 63 - 1}")


def image_side(text):
    """--image-size's value: a power of two of at least 32."""
    value = int(text)
    if value < 32 or value & (value - 1):
        raise argparse.ArgumentTypeError(
            f"{text} is not a size the DCGAN layers can make: use a power of two "
            "of at least 32 (32, 64, 128, 256, ...)")
    return value


def get_args_parser():
    """The training command's flags; each default is the tutorial's value."""
    parser = ArgumentParser(
        prog="dcgan.py", allow_abbrev=False,
        formatter_class=HelpFormatter,
        description="Train the DCGAN of the PyTorch 'DCGAN faces' tutorial. "
                    "Other commands: 'dcgan.py generate --help', 'dcgan.py evaluate --help'. "
                    "To train on several GPUs or machines, start it with torchrun "
                    "(torchrun --nproc_per_node N dcgan.py ...); --ngpu is the tutorial's "
                    "single-process nn.DataParallel.")
    tutorial = parser.add_argument_group("the tutorial's hyperparameters")
    inputs = TUTORIAL_INPUTS
    tutorial.add_argument("--dataroot", default=inputs["dataroot"],
                          help="images: DIR/img_align_celeba/*.jpg (the tutorial's "
                               "layout), any ImageFolder, or a flat folder of images")
    tutorial.add_argument("--workers", type=non_negative_int, default=inputs["workers"],
                          help="processes that decode images")
    tutorial.add_argument("--batch-size", type=positive_int, default=inputs["batch_size"],
                          help="images per iteration (the global batch under torchrun)")
    tutorial.add_argument("--image-size", type=image_side, default=inputs["image_size"],
                          help="side of the square training images: a power of two >= 32")
    tutorial.add_argument("--nc", type=int, choices=(1, 3), default=inputs["nc"],
                          help="colour channels: 3 for RGB, 1 for grayscale")
    tutorial.add_argument("--nz", type=positive_int, default=inputs["nz"],
                          help="length of the latent vector z")
    tutorial.add_argument("--ngf", type=positive_int, default=inputs["ngf"],
                          help="feature maps in the generator")
    tutorial.add_argument("--ndf", type=positive_int, default=inputs["ndf"],
                          help="feature maps in the discriminator")
    tutorial.add_argument("--num-epochs", type=positive_int, default=inputs["num_epochs"],
                          help="passes over the dataset")
    tutorial.add_argument("--lr", type=positive_float, default=inputs["lr"],
                          help="Adam learning rate of both networks")
    tutorial.add_argument("--beta1", type=unit_interval, default=inputs["beta1"],
                          help="Adam beta1 of both networks")
    tutorial.add_argument("--ngpu", type=non_negative_int, default=inputs["ngpu"],
                          help="GPUs for nn.DataParallel; 0 trains on the CPU")
    tutorial.add_argument("--seed", type=seed_number, default=inputs["seed"], help="random seed")

    run = parser.add_argument_group("the run")
    run.add_argument("--outdir", default="outputs", help="where every output is written")
    run.add_argument("--device", default="auto",
                     help="auto (CUDA if available and --ngpu > 0, then MPS, then other "
                          "accelerators, then CPU), cpu, cuda, cuda:1, mps, ...")
    run.add_argument("--max-iters", type=positive_int, default=None,
                     help="stop after this many iterations and still write every output")
    run.add_argument("--log-every", type=positive_int, default=50,
                     help="print the statistics line every this many batches of an epoch")
    run.add_argument("--sample-every", type=positive_int, default=500,
                     help="save a fixed-noise grid every this many iterations")
    run.add_argument("--checkpoint-every", type=positive_int, default=None,
                     help="write checkpoint.pt every this many iterations (default: "
                          "--sample-every); also at each epoch's end, at the end and on "
                          "Ctrl-C or SIGTERM")
    run.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                     help="continue the run saved in CHECKPOINT (default: "
                          "OUTDIR/checkpoint.pt) with its configuration; flags given "
                          "here override what may change")
    run.add_argument("--on-failure", choices=("warn", "stop"), default="warn",
                     help="when the health monitor sees the run failing (D has won, G has "
                          "collapsed, no learning): warn once, or stop with a checkpoint "
                          f"and exit status {FAILURE_EXIT}")
    run.add_argument("--deterministic", action="store_true",
                     help="repeatable on a GPU: deterministic kernels and no cuDNN "
                          "autotuning (slower; CPU runs are repeatable without it)")
    run.add_argument("--allow-changed-data", action="store_true",
                     help="with --resume: go on although the images changed since the "
                          "checkpoint (the run is then no longer the uninterrupted one)")
    run.add_argument("--download", action="store_true",
                     help="first fetch CelebA into DATAROOT/img_align_celeba from the Hugging "
                          "Face Hub (verified; resumes; see data/README.md)")
    run.add_argument("--download-from", default=None, metavar="REPO_ID[@REVISION]",
                     help="with --download: a Hub dataset repo of your own that holds an "
                          "img_align_celeba.zip")

    speed = parser.add_argument_group("speed (none of these changes a number unless it says so)")
    speed.add_argument("--no-cache", action="store_true",
                       help="decode every JPEG in every epoch through DataLoader workers, "
                            "as the tutorial does, instead of the decode-once cache")
    speed.add_argument("--cache-dir", default=None,
                       help="where the decode-once cache lives (default: "
                            "$XDG_CACHE_HOME/dcgan-faces or ~/.cache/dcgan-faces)")
    speed.add_argument("--amp", action="store_true",
                       help="bf16 autocast on CUDA, with D's Sigmoid folded into "
                            "BCEWithLogitsLoss (changes the numbers)")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile G and D (changes the numbers slightly)")
    speed.add_argument("--channels-last", action="store_true",
                       help="channels-last memory format (changes the numbers slightly)")

    scale = parser.add_argument_group("scale (under torchrun)")
    scale.add_argument("--sync-bn", action="store_true",
                       help="BatchNorm statistics over the global batch (SyncBatchNorm)")

    better = parser.add_argument_group(
        "better faces (each changes the numbers; see the README's ablation)")
    better.add_argument("--diffaug", nargs="?", const="color,translation,cutout", default=None,
                        type=diffaug_policy, metavar="POLICY",
                        help="DiffAugment every image D sees: a comma-separated subset of "
                             "color,translation,cutout (all three if none is given; 'none' "
                             "switches every one off)")
    better.add_argument("--spectral-norm", action="store_true",
                        help="spectral normalisation of D's convolutions; D loses its "
                             "BatchNorm layers (cannot change on resume)")
    better.add_argument("--loss", choices=("bce", "hinge"), default="bce",
                        help="bce: the tutorial's BCELoss; hinge: the hinge loss of "
                             "SNGAN and BigGAN (D returns logits)")
    better.add_argument("--lr-d", type=positive_float, default=None,
                        help="D's Adam learning rate (default: --lr)")
    better.add_argument("--lr-g", type=positive_float, default=None,
                        help="G's Adam learning rate (default: --lr)")

    measure = parser.add_argument_group("measurement")
    measure.add_argument("--eval-every", type=positive_int, default=None,
                         help="every this many iterations and at the end, the sliced "
                              "Wasserstein distance (SWD) of G's images to real ones")
    measure.add_argument("--eval-metrics", type=metric_list, default="swd",
                         help="what --eval-every measures: a comma-separated subset of "
                              "swd,fid,kid (FID and KID: torch-fidelity's Inception)")
    measure.add_argument("--eval-samples", type=positive_int, default=None,
                         help=f"images per evaluation (default: {EVAL_SAMPLES} a set for SWD; "
                              f"{FID_SAMPLES:,} generated against all real images for FID and "
                              "KID, the papers' protocol)")
    measure.add_argument("--fid-weights", default=None, metavar="PATH",
                         help=f"torch-fidelity's Inception weights ({INCEPTION_FILE}), for "
                              "machines without network (default: download once)")
    measure.add_argument("--eval-dataroot", default=None,
                         help="held-out real images for SWD (default: training images)")
    measure.add_argument("--ema", type=unit_interval, default=None, metavar="DECAY",
                         help="keep an exponential moving average of G's weights with "
                              "this decay (0.999 is usual); figures, samples and SWD use it")
    measure.add_argument("--ema-rampup", type=unit_interval, default=0.05, metavar="RATIO",
                         help="EMA warm-up (StyleGAN2's): average over at most this "
                              "fraction of the iterations so far, so that short runs "
                              "gain too; 0 uses DECAY from the start")
    measure.add_argument("--tensorboard", action="store_true",
                         help="also log to OUTDIR/tensorboard (needs the tensorboard package)")
    return parser


def get_subcommand_parser(command, description):
    """The flags that generate and evaluate share: which generator, on which device."""
    parser = ArgumentParser(prog=f"dcgan.py {command}", allow_abbrev=False,
                            formatter_class=HelpFormatter,
                            description=description)
    parser.add_argument("--checkpoint", default="outputs/checkpoint.pt",
                        help="checkpoint.pt (its EMA generator if it has one) or netG.pt")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps, ...")
    return parser


def get_generate_parser():
    parser = get_subcommand_parser(
        "generate", "Write images from a trained generator (checkpoint.pt or netG.pt); "
                    "needs neither the dataset nor a GPU.")
    parser.add_argument("--outdir", default=None,
                        help="where to write (default: a samples/ folder beside the checkpoint)")
    parser.add_argument("--num-samples", type=positive_int, default=64,
                        help="how many images")
    parser.add_argument("--seed", type=seed_number, default=999, help="seed of the latent vectors")
    parser.add_argument("--single-files", action="store_true",
                        help="also write each image as its own PNG (for FID tools)")
    parser.add_argument("--interpolate", action="store_true",
                        help="instead, walk the latent space: --rows rows that morph "
                             "from one face to another in --steps steps (slerp)")
    parser.add_argument("--rows", type=positive_int, default=8, help="rows of the walk")
    parser.add_argument("--steps", type=at_least_two, default=10, help="images per row")
    parser.add_argument("--batch-size", type=positive_int, default=256,
                        help="images generated at once")
    return parser


def get_evaluate_parser():
    parser = get_subcommand_parser(
        "evaluate", "Print the sliced Wasserstein distance (SWD), FID or KID between a "
                    "trained generator's images and real ones, beside the real-vs-real floor.")
    parser.add_argument("--metrics", type=metric_list, default="swd",
                        help="a comma-separated subset of swd,fid,kid")
    parser.add_argument("--fid-weights", default=None, metavar="PATH",
                        help=f"torch-fidelity's Inception weights ({INCEPTION_FILE}) (default: "
                             "download once)")
    parser.add_argument("--dataroot", default=None,
                        help="real images (default: the checkpoint's --dataroot)")
    parser.add_argument("--eval-dataroot", default=None,
                        help="held-out real images (default: the checkpoint's, if any)")
    parser.add_argument("--eval-samples", type=positive_int, default=None,
                        help=f"images per set (default: the checkpoint's, else {EVAL_SAMPLES} for "
                             f"SWD and the papers' {FID_SAMPLES:,} generated against all real for FID)")
    parser.add_argument("--seed", type=seed_number, default=None,
                        help="seed (default: the checkpoint's, so numbers match training's)")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="processes that decode images")
    parser.add_argument("--cache-dir", default=None, help="as in training")
    return parser


def parse_train_args(argv):
    """Parses the training flags; returns (args, given), given holding the flags typed."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    # argparse leaves an attribute that is already set alone unless the flag is given, so
    # a namespace of sentinels tells typed flags from defaults.
    unset = object()
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{k: unset for k in vars(args)}))
    given = {k: v for k, v in vars(probe).items() if v is not unset}
    return args, given


def settings(config=(), given=()):
    """The training settings as a dict: the defaults, then a checkpoint's configuration
    (`config`), then the flags given on this command line (`given`)."""
    result = vars(get_args_parser().parse_args([]))
    result.update({k: v for k, v in dict(config).items() if k in result})
    result.update(given)
    return result


def resolve_resume(args, given):
    """Turns --resume into the checkpoint's configuration with the allowed overrides.

    Returns (args, checkpoint) where checkpoint is the loaded dict, or None for a new run.
    """
    if args.resume is None:
        return args, None
    path = args.resume or checkpoint_path(args.outdir)
    checkpoint = load_checkpoint(path, "cpu", flag="--resume", whole=True)
    saved = settings(checkpoint["config"])
    fixed = [f"--{k.replace('_', '-')} {saved[k]} -> {given[k]}"
             for k in FIXED_ON_RESUME if k in given and given[k] != saved[k]]
    if fixed:
        raise UserError(f"--resume {path}: the run was trained with other settings, which "
                        f"cannot change on resume: {', '.join(fixed)}; drop these flags, or "
                        "start a new run in another --outdir")
    changed = [f"--{k.replace('_', '-')} {saved[k]} -> {v}" for k, v in given.items()
               if k not in PER_INVOCATION and k != "outdir" and v != saved[k]]
    resumed = settings(checkpoint["config"], given)
    resumed.update({key: given.get(key) for key in PER_INVOCATION}, resume=path)
    resumed["outdir"] = given.get("outdir") or os.path.dirname(os.path.abspath(path))
    if changed and int(os.environ.get("RANK", "0")) == 0:  # torchrun starts one per rank
        print(f"Resuming with changed settings: {', '.join(changed)}")
    return argparse.Namespace(**resumed), checkpoint


def resolve_settings(args, proc):
    """The one place where settings follow from others or from this machine (the checkpoint
    interval, the workers, features this device or job cannot give: one line each). The
    run prints the settings it returns, saves them in config.json and never changes them."""
    args = argparse.Namespace(**vars(args))
    args.checkpoint_every = args.checkpoint_every or args.sample_every
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.workers > usable:
        proc.log(f"note: --workers {args.workers} is more than the {usable} CPU cores here can "
                 f"use; decoding with {usable}")
        args.workers = usable
    if args.amp and not amp_supported(proc.device):
        proc.log(f"note: --amp uses bf16 autocast on CUDA only; training in float32 on {proc.device}")
        args.amp = False
    if args.amp and args.compile and args.channels_last:
        proc.log("note: --amp --compile --channels-last together crashed in torch.compile's "
                 "backward pass on CUDA; training without --channels-last")
        args.channels_last = False
    if args.sync_bn and proc.world_size == 1:
        proc.log("note: --sync-bn matters only under torchrun with several processes")
        args.sync_bn = False
    elif args.sync_bn and proc.device.type != "cuda":
        proc.log(f"note: --sync-bn needs CUDA (SyncBatchNorm); BatchNorm statistics stay per "
                 f"process on {proc.device.type}")
        args.sync_bn = False
    return args


def main(argv=None):
    """Dispatches to train (the default), generate or evaluate; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["generate"]:
            return generate(get_generate_parser().parse_args(argv[1:]))
        if argv[:1] == ["evaluate"]:
            return evaluate(get_evaluate_parser().parse_args(argv[1:]))
        args, given = parse_train_args(argv)
        args, checkpoint = resolve_resume(args, given)
        return train(args, checkpoint)
    except UserError as error:
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0 or not error.same_on_every_rank:  # under torchrun, one line, not one a rank
            print(f"dcgan.py: error: {'' if rank == 0 else f'(rank {rank}) '}{error}", file=sys.stderr)
        else:  # torchrun stops every rank when one exits: let rank 0 say it first
            time.sleep(2)
        return 2
    except OSError as error:  # a write that failed mid-run, a full disk say
        print(f"dcgan.py: error: {error.filename or 'a file'}: {reason(error)}; what was "
              "written before is intact (checkpoints are replaced whole): fix this, then run "
              "again (a training run: with --resume)", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"dcgan.py: stopped at once by a second {signal.Signals(stop.signum).name}; "
              "the last checkpoint is as it was", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("dcgan.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
