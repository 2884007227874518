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
    dataset                       dataset (data.FaceImages: the tutorial's ImageFolder)
    dataloader                    dataloader (data.Batches: the same shuffle, from a decode-once cache)
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
import torchvision.transforms as transforms
import torchvision.utils as vutils
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

# Beyond the tutorial: what a long run needs, one module per concern (see dcgan_beyond/)
from dcgan_beyond import (checkpoints, cli, data, devices, ema, errors, files, fidelity, health,
                          inputs, metrics, outdir, progress, sampling, sharing, stopping,
                          techniques, time_limit)


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

def make_dataset(dataroot, image_size=64, nc=3):
    """The tutorial's ImageFolder dataset with its transforms (beyond: data.FaceImages
    also takes a flat folder, converts to nc channels and skips an unreadable image; a
    missing or empty folder is said in one line)."""
    # We can use an image folder dataset the way we have it setup.
    # Create the dataset
    return data.open_images(dataroot, nc=nc, transform=transforms.Compose([
        transforms.Resize(image_size),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize((0.5,) * nc, (0.5,) * nc),
    ]))


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
        self.nz, self.ngf, self.nc, self.image_size = nz, ngf, nc, image_size

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
        techniques.spectral_norm(netD)
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
    """Everything the training loop changes; a checkpoint holds it."""
    # the tutorial's
    netG: nn.Module
    netD: nn.Module
    criterion: nn.Module
    fixed_noise: torch.Tensor
    optimizerD: optim.Optimizer
    optimizerG: optim.Optimizer
    img_list: list = dataclasses.field(default_factory=list)  # uint8 fixed-noise grids
    metrics: Optional["metrics.Metrics"] = None  # G_losses, D_losses and the rest of each stats line
    # how the step runs the networks: netG and netD wrapped for speed and scale (the same
    # parameters), D's output as logits (--amp, --loss hinge), what D sees (--diffaug)
    wrappedG: Optional[nn.Module] = None
    wrappedD: Optional[nn.Module] = None
    logits: bool = False
    augment: Callable = unchanged
    # beyond: the EMA generator (--ema), when each grid was made
    ema: Optional[nn.Module] = None
    img_iterations: list = dataclasses.field(default_factory=list)
    # where the loop is: the next batch's position, every random stream, the training time
    epoch: int = 0
    batch_in_epoch: int = 0
    iteration: int = 0
    random: checkpoints.RandomStreams = dataclasses.field(default_factory=checkpoints.RandomStreams)
    elapsed: float = 0.0  # training seconds before this process started
    started: float = dataclasses.field(default_factory=time.time)

    def __post_init__(self):
        # unwrapped until train() wraps them
        self.wrappedG = self.netG if self.wrappedG is None else self.wrappedG
        self.wrappedD = self.netD if self.wrappedD is None else self.wrappedD

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
    criterion = (techniques.HingeLoss() if args.loss == "hinge" else
                 nn.BCEWithLogitsLoss() if logits else nn.BCELoss())
    # Create batch of latent vectors that we will use to visualize the progression of the generator
    fixed_noise = torch.randn(64, args.nz, 1, 1, device=device)
    # Setup Adam optimizers for both G and D (beyond: --lr-d and --lr-g, else both --lr)
    lr_d, lr_g = techniques.learning_rates(args)
    optimizerD = optim.Adam(netD.parameters(), lr=lr_d, betas=(args.beta1, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=lr_g, betas=(args.beta1, 0.999))
    return TrainingState(netG, netD, criterion, fixed_noise, optimizerD, optimizerG, logits=logits)


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------

def train_step(state, real):
    """One iteration of the tutorial's loop: part (1) updates D, part (2) updates G, each
    network as the step runs it. Returns the tutorial's statistics as one tensor on the
    device (no host sync): Loss_D, Loss_G, D(x), D(G(z)) before and after D's step."""
    # Generate batch of latent vectors (the tutorial draws it after D's all-real pass;
    # nothing in between draws a random number, so the numbers are the same)
    noise = torch.randn(real.size(0), state.netG.nz, 1, 1, device=real.device)
    try:
        fake, errD, D_x, D_G_z1 = d_step(state.wrappedG, state.wrappedD, state.optimizerD,
                                         state.criterion, real, noise, state.logits, state.augment)
        errG, D_G_z2 = g_step(state.wrappedG, state.wrappedD, state.optimizerG, state.criterion,
                              fake, state.logits, state.augment)
    except RuntimeError:  # beyond: BCELoss refuses a NaN, so a diverged run ends here
        stopping.check_finite(state.netG, state.netD)
        raise
    return torch.stack([errD, errG, D_x, D_G_z1, D_G_z2]).detach()


def mean_probability(output, logits=False):
    """D's mean output as a probability (the tutorial's D(x) and D(G(z)))."""
    return (output.sigmoid() if logits else output).mean()


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
    D_x = mean_probability(output, logits)

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
    D_G_z1 = mean_probability(output, logits)
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
    errG = (criterion.generator_loss(output) if isinstance(criterion, techniques.HingeLoss)
            else criterion(output, label))
    # Calculate gradients for G
    errG.backward()
    frozen_D.requires_grad_(True)
    D_G_z2 = mean_probability(output, logits)
    # Update G
    optimizerG.step()
    return errG, D_G_z2


def stats_line(epoch, num_epochs, i, num_batches, stats):
    """The tutorial's statistics line, to the letter."""
    return ('[%d/%d][%d/%d]\tLoss_D: %.4f\tLoss_G: %.4f\tD(x): %.4f\tD(G(z)): %.4f / %.4f'
            % (epoch, num_epochs, i, num_batches, *stats))


def training_loop(args, process, state, dataloader, stop, deadline, report, board, monitor,
                  evaluation, checkpoint_file):
    """The tutorial's training loop: for each batch of each epoch, update D, then G; print
    the statistics every --log-every batches; save the losses; every --sample-every
    iterations save G's output on the fixed noise. Each extra is one call to an object
    that names it. Returns after the last iteration, or early when asked to stop."""
    num_batches = len(dataloader)
    total = args.num_epochs * num_batches
    last_iteration = min(total, args.max_iters or total) - 1  # beyond: --max-iters
    # beyond: a resume whose earlier processes spent its --max-time trains nothing more
    if state.iteration > last_iteration or deadline.reached(state.elapsed):
        return process.log(f"Nothing to train: the run already has {state.iteration} "
                           "iterations; raise --num-epochs, --max-iters or --max-time to "
                           "train longer")
    process.log("Starting Training Loop...")
    # For each epoch
    for epoch in range(state.epoch, args.num_epochs):
        # For each batch in the dataloader (a resumed epoch: the same shuffle, from its batch)
        batches = state.random.epoch(dataloader, epoch, state.batch_in_epoch)
        for i, data in enumerate(batches, state.batch_in_epoch):
            iters = state.iteration
            # (1) Update D network, (2) Update G network
            stats = train_step(state, data)
            state.iteration, state.batch_in_epoch = iters + 1, i + 1
            # beyond: --max-time ends the run here too, with every output written
            last = iters == last_iteration or deadline.reached(state.seconds())
            ema.update(state.ema, state.netG, iters, args.ema, args.ema_rampup)  # beyond: --ema
            report.step()  # beyond: the progress bar

            # Save Losses for plotting later (on the device until the next stats line)
            state.metrics.record(epoch, iters, stats, state.seconds())
            # Output training stats
            if i % args.log_every == 0 or last:
                rows = state.metrics.unread()  # every row since the last stats line
                if i % args.log_every == 0:
                    process.log(stats_line(epoch, args.num_epochs, i, num_batches, rows[-1][2:7]))
                board.losses(rows)  # beyond: --tensorboard
                monitor.check_losses(rows)  # beyond: the health monitor

            # Check how the generator is doing by saving G's output on fixed_noise
            if (iters % args.sample_every == 0) or last:
                grid = fixed_noise_grid(state.sampleG, state.fixed_noise)
                state.img_list.append(grid)
                state.img_iterations.append(iters)
                report.grid(grid, iters)  # beyond: progress/iter_*.png
                board.image(grid, iters)  # beyond: --tensorboard
                monitor.check_grid(grid, iters)  # beyond: the health monitor

            evaluation.measure(state.sampleG, iters, last)  # beyond: --eval-every
            stopping = stop.requested()  # beyond: Ctrl-C, SIGTERM, --on-failure stop (any rank)
            checkpoint_file.save(state, due=last or stopping)  # beyond: checkpoint.pt
            if stopping or last:
                return
        # The epoch is over: the next batch is the first of the next epoch, a new shuffle
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        state.random.end_epoch()
        report.end_epoch(epoch)  # beyond: a summary line in logs
        checkpoint_file.save(state, due=True)  # beyond: checkpoint.pt


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
    # GIF frames hold 256 colours; PIL's default palette search takes 0.15 s a frame, the
    # fast octree a millisecond
    frames = [Image.fromarray(grid.permute(1, 2, 0).numpy()).quantize(method=Image.Quantize.FASTOCTREE)
              for grid in img_list]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=1000, loop=0)


def save_real_vs_fake(real_batch, fake_grid, path):
    fig = new_figure((15, 15))
    # Plot the real images
    show_grid(fig.add_subplot(1, 2, 1), vutils.make_grid(real_batch[:64].float().cpu(),
                                                         padding=5, normalize=True), "Real Images")
    # Plot the fake images from the last epoch
    show_grid(fig.add_subplot(1, 2, 2), fake_grid, "Fake Images")
    fig.savefig(path, bbox_inches="tight")


def save_results(args, state, dataloader, evals):
    """The final weights and the tutorial's figures."""
    out = functools.partial(os.path.join, args.outdir)
    for name, net in (("netG.pt", state.netG), ("netD.pt", state.netD)):
        files.atomic_write(out(name), lambda f: torch.save(net.state_dict(), f))
    save_loss_curve(state.metrics.G_losses, state.metrics.D_losses, out("loss_curve.png"))
    save_progress_gif(state.img_list, out("progress.gif"))
    # Grab a batch of real images from the dataloader (a new draw, as the tutorial's)
    real_batch = dataloader.first()
    save_real_vs_fake(real_batch, state.img_list[-1], out("real_vs_fake.png"))
    metrics.save_eval_curves(evals, args.outdir, new_figure)  # beyond: swd.png, fid.png


# ----------------------------------------------------------------------------------------
# The program
# ----------------------------------------------------------------------------------------

def train(args, checkpoint=None):
    """The tutorial's program from its seed to its figures. `checkpoint`: the loaded
    checkpoint that --resume continues, or None. Returns the exit status: 0, or 128 + the
    signal's number when a signal stopped it after a checkpoint."""
    process = devices.setup_distributed(args)  # beyond: rank, device; torchrun's process group
    args = cli.resolve_settings(args, process)  # beyond: what this machine can give, said once
    # beyond: every input is checked before the first write; --download fetches CelebA
    inputs.check(args, process, checkpoint, Generator, Discriminator)
    dataset = make_dataset(args.dataroot, args.image_size, args.nc)
    held_out = inputs.check_images(args, process, checkpoint, dataset)
    with outdir.hold(args, process) as outputs:  # beyond: the outdir held, the configuration said
        # Set random seed for reproducibility (one stream per rank: their noise must differ)
        process.log("Random Seed: ", args.seed)
        random.seed(args.seed)
        torch.manual_seed(args.seed + process.rank)

        # Create the dataloader (beyond: the images decoded once, into a cache; this rank's share)
        pixels = data.load_pixels(args, process, dataset)
        dataloader = data.Batches(dataset, pixels, args.batch_size, args.workers, process,
                                  args.seed, args.channels_last)
        # Plot some training images
        real_batch = dataloader.first()
        if process.writes:
            save_training_images(real_batch, outputs.path("training_images.png"))

        netG, netD = build_models(args, process.device)
        # Print the models
        process.log(netG)
        process.log(netD)
        state = loss_and_optimizers(args, netG, netD, process.device,
                                    logits=techniques.d_returns_logits(args))

        # Beyond the tutorial: config.json, the EMA generator, --diffaug, the checkpoint's
        # state, the networks wrapped for speed and scale; then what runs beside the loop
        outdir.write_config(args, process)
        devices.broadcast(state.fixed_noise, process)  # every rank draws the grids (SyncBatchNorm)
        state.ema = ema.copy_of(netG) if args.ema is not None else None
        state.augment = techniques.DiffAugment(args.diffaug) if args.diffaug else unchanged
        if checkpoint is not None:
            checkpoints.restore_training(state, checkpoint, args, process, len(dataloader))
        state.metrics = metrics.Metrics(outputs.path("metrics.csv"),
                                        checkpoint["metrics"] if checkpoint else [], process.writes)
        state.wrappedG = devices.prepare_for_training(netG, args, process)
        state.wrappedD = devices.prepare_for_training(netD, args, process, logits=state.logits)
        stop = stopping.StopRequest(process)
        deadline = time_limit.TimeLimit(args.max_time, process)
        monitor = health.Monitor(args, process, dataset, pixels, outputs, stop, checkpoint)
        evaluation = fidelity.Evaluation(args, process, dataset, pixels, held_out, outputs, checkpoint)
        checkpoint_file = checkpoints.CheckpointFile(args, process, dataset, len(dataloader), stop,
                                                     evaluation.rows, monitor.events)
        # Training Loop
        try:
            report = progress.Report(args, process, state.epoch, state.iteration,
                                     len(dataloader), outputs)
            with stop, report:
                training_loop(args, process, state, dataloader, stop, deadline, report,
                              outputs.board, monitor, evaluation, checkpoint_file)
        except stopping.Diverged as error:
            raise checkpoint_file.diverged(error, state.iteration) from None
        outputs.board.losses(state.metrics.unread())  # beyond: rows a stop's checkpoint flushed
        if stop.stopping:
            return stop.report(state.iteration, checkpoint_file.path)  # beyond: how to resume
        if process.writes:
            save_results(args, state, dataloader, evaluation.rows)
            process.log(f"Wrote {args.outdir}: netG.pt, netD.pt, metrics.csv, figures")
            deadline.report(state.iteration, state.seconds(), checkpoint_file.path)  # beyond: --max-time
            if args.push_to_hub:  # beyond: --push-to-hub, a run that completed
                sharing.push(checkpoint_file.path, args.push_to_hub, Generator)
        devices.finish_distributed(process)
        return 0


def main(argv=None):
    """The command line: train (the default), generate, evaluate or push; returns the exit
    status. A problem the user can fix is one line on stderr, never a traceback."""
    try:
        command, args, checkpoint = cli.parse(argv, TUTORIAL_INPUTS)
        if command == "generate":
            return sampling.generate(args, Generator)
        if command == "evaluate":
            return sampling.evaluate(args, Generator, TUTORIAL_INPUTS)
        if command == "push":
            return sharing.push(args.checkpoint, args.repo_id, Generator, args.private,
                                args.revision, args.commit_message)
        return train(args, checkpoint)
    except (errors.UserError, OSError, stopping.Interrupted, KeyboardInterrupt) as error:
        return cli.exit_status(error)


if __name__ == "__main__":
    sys.exit(main())
