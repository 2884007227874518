#!/usr/bin/env python3
"""DCGAN faces: the PyTorch "DCGAN faces" tutorial as one training program.

    python dcgan.py --dataroot data/celeba                    # train, step for step as the tutorial
    python dcgan.py --dataroot data/celeba --resume           # continue an interrupted run exactly
    python dcgan.py generate --checkpoint outputs/checkpoint.pt
    python dcgan.py evaluate --checkpoint outputs/checkpoint.pt
    torchrun --nproc_per_node 4 dcgan.py --dataroot data/celeba

With default flags it builds the tutorial's models, draws the tutorial's random numbers in
the tutorial's order and prints the tutorial's statistics lines.

This file is the tutorial, in its order: inputs, data, weights_init, Generator,
Discriminator, loss and optimizers, the training loop, the results, and `train()`, the
whole program. What a training program adds (checkpoints, signals, torchrun, the cache,
metrics, the command line) lives in the package dcgan_beyond/ beside it, one module per
concern; each of those features appears here as one call that names its module, at a
place marked "beyond:".

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
import dataclasses
import functools
import os
import random
import sys
import time
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import torch.utils.data
import torchvision.datasets as dset
import torchvision.transforms as transforms
import torchvision.utils as vutils
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

# Beyond the tutorial: what a long run needs, one module per concern (see dcgan_beyond/)
from dcgan_beyond import better_faces, checkpoints, cli, data, devices, files, metrics, run, stopping


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
            loader=functools.partial(data.load_image, mode="L" if nc == 1 else "RGB"),
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


def make_dataset(dataroot, image_size=64, nc=3, flag="--dataroot"):
    """Create the dataset (beyond: a folder that is missing, unreadable or empty is said
    in one line)."""
    return data.open_dataset(FaceImages, dataroot, image_size, nc, flag)


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
        self.pixels = data.pixels_on_device(pixels, proc.device) if pixels is not None else None

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
            batches = data.cached_batches(self.pixels, index_batches, self.device)
        else:
            batches = data.decoded_batches(self.images, index_batches, self.workers, self.device)
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
        better_faces.apply_spectral_norm(netD)
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
    metrics: Optional["metrics.Metrics"] = None
    img_list: list = dataclasses.field(default_factory=list)  # uint8 fixed-noise grids
    img_iterations: list = dataclasses.field(default_factory=list)
    evals: list = dataclasses.field(default_factory=list)
    health: list = dataclasses.field(default_factory=list)  # the health monitor's warnings
    epoch: int = 0
    batch_in_epoch: int = 0
    iteration: int = 0
    random: checkpoints.RandomStreams = dataclasses.field(default_factory=checkpoints.RandomStreams)
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
    criterion = (better_faces.HingeLoss() if args.loss == "hinge" else
                 nn.BCEWithLogitsLoss() if logits else nn.BCELoss())
    # Create batch of latent vectors that we will use to visualize the progression of the generator
    fixed_noise = torch.randn(64, args.nz, 1, 1, device=device)
    # Setup Adam optimizers for both G and D (beyond: --lr-d and --lr-g, else both --lr)
    lr_d, lr_g = better_faces.learning_rates(args)
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
            raise stopping.Diverged() from None
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
    errG = (criterion.generator_loss(output) if isinstance(criterion, better_faces.HingeLoss)
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
        files.atomic_write(out(name), lambda f: torch.save(net.state_dict(), f))
    save_loss_curve(state.metrics.G_losses, state.metrics.D_losses, out("loss_curve.png"))
    save_progress_gif(state.img_list, out("progress.gif"))
    # Grab a batch of real images from the dataloader (a new draw, as the tutorial's)
    real_batch = dataloader.first()
    save_real_vs_fake(real_batch, state.img_list[-1], out("real_vs_fake.png"))
    metrics.save_eval_curves(state.evals, args.outdir, new_figure)  # beyond: swd.png, fid.png


# ----------------------------------------------------------------------------------------
# The program
# ----------------------------------------------------------------------------------------

def train(args, checkpoint=None):
    """The tutorial's program from its seed to its figures. Returns the exit status: 0,
    or 128 + the signal's number when a signal stopped it after a checkpoint."""
    proc = devices.setup_distributed(args)  # beyond: rank, device; torchrun's process group
    args = cli.resolve_settings(args, proc)  # beyond: what this machine can give, said once
    # Create the dataset (beyond: every input is checked before anything is written)
    images, held_out = run.open_inputs(args, proc, checkpoint, make_dataset,
                                       (Generator, Discriminator))
    with run.start_run(args, proc, checkpoint) as outputs:  # beyond: hold the outdir, config.json
        # Set random seed for reproducibility (one stream per rank: their noise must differ)
        proc.log("Random Seed: ", args.seed)
        random.seed(args.seed)
        torch.manual_seed(args.seed + proc.rank)

        # Create the dataloader (beyond: the images decoded once, into a cache)
        pixels = data.load_pixels(args, proc, images)
        dataloader = Batches(images, pixels, args.batch_size, args.workers, proc, args.seed,
                             args.channels_last)
        # Plot some training images
        real_batch = dataloader.first()
        if proc.writes:
            save_training_images(real_batch, os.path.join(args.outdir, "training_images.png"))

        netG, netD = build_models(args, proc.device)
        # Print the models
        proc.log(netG)
        proc.log(netD)
        state = loss_and_optimizers(args, netG, netD, proc.device,
                                    logits=better_faces.d_returns_logits(args))

        # Beyond: resume a checkpoint, the EMA generator, wrappers for speed and scale, extras
        run.prepare_training(state, args, proc, checkpoint, len(dataloader))
        extras = run.Extras(args, proc, state, images, pixels, held_out, outputs, len(dataloader))
        # Training Loop
        try:
            with extras:
                training_loop(args, proc, state, dataloader, extras)
        except stopping.Diverged as error:
            raise extras.diverged(error) from None
        if extras.stop.stopping:
            return extras.stopped()
        if proc.writes:
            save_results(args, state, dataloader)
            proc.log(f"Wrote {args.outdir}: netG.pt, netD.pt, metrics.csv, figures")
        devices.finish_distributed(proc)
        return 0


def main(argv=None):
    """The command line: train (the default), generate or evaluate; returns the exit
    status. The package gets what it needs of this file here, as arguments."""
    return cli.main(argv, cli.Tutorial(inputs=TUTORIAL_INPUTS, train=train,
                                       make_dataset=make_dataset, Generator=Generator))


if __name__ == "__main__":
    sys.exit(main())
