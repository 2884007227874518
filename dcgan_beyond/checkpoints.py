"""Checkpoints and exact resume: one dict that holds the whole run, and every random stream."""
import os
import pickle
import random
import time

import numpy as np
import torch

from .data import file_digest
from .devices import gather
from .ema import sampling_weights
from .errors import UserError, first_line, reason
from .files import atomic_write


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

    def state_dict(self, process, mid_epoch):
        """Every rank's streams now ("rng") and its CPU state before the shuffle of the
        epoch that the next batch belongs to ("epoch_rng")."""
        before = self.before_shuffle if mid_epoch else torch.get_rng_state()
        return {"rng": gather(self.get_states(process.device), process), "epoch_rng": gather(before, process)}

    def load_state_dict(self, saved, process, mid_epoch, reseed=None):
        """Restores this rank's streams from state_dict(); with `reseed` (the data or the
        number of processes changed), seeds anew from it instead: no longer exact."""
        if reseed is None:
            states, before = saved["rng"][process.rank], saved["epoch_rng"][process.rank]
            if states["device_type"] != process.device.type:  # CUDA-saved, CPU-loaded: keep the CPU streams
                states = dict(states, device=None, device_type=process.device.type)
        else:
            torch.manual_seed(reseed)
            states, before = self.get_states(process.device), torch.get_rng_state()
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


class CheckpointFile:
    """OUTDIR/checkpoint.pt: the one dict that resumes the run exactly, written every
    --checkpoint-every iterations and whenever due (an epoch's end, the end, a stop). It
    holds the training state, the evaluations and health warnings (the lists that
    `evals` and `health` name, as they grow) and what it trained on, so that a resume can
    tell changed images."""

    def __init__(self, args, process, images, num_batches, stop, evals, health):
        self.path, self.args, self.process = checkpoint_path(args.outdir), args, process
        self.num_batches, self.stop, self.evals, self.health = num_batches, stop, evals, health
        self.data = {"images": len(images), "digest": file_digest(images)}

    def save(self, state, due=False):
        """Writes the file when due or every --checkpoint-every iterations; a second
        signal while it is written waits for the file to be whole."""
        if due or (state.iteration - 1) % self.args.checkpoint_every == 0:
            with self.stop.deferred():
                save_checkpoint(self.path, self.args, state, self.process, self.num_batches,
                                self.data, self.evals, self.health)

    def diverged(self, error, iteration):
        """The one line that ends a diverged run, with what to do."""
        iteration = iteration if error.iteration is None else error.iteration
        advice = (f"the last good checkpoint, {self.path}, is intact; resume from it with a "
                  "lower --lr" if os.path.exists(self.path) else "no checkpoint was written "
                  "before it; start again with a lower --lr")
        return UserError(f"training diverged at iteration {iteration}: a loss or D output "
                         f"became NaN or infinite; {advice}")


def save_checkpoint(path, args, state, process, num_batches, data, evals, health):
    """Writes the one checkpoint dict that resumes the run exactly (rank 0 writes it;
    every rank contributes its random streams)."""
    state.metrics.flush()  # the checkpoint's rows and metrics.csv agree
    streams = state.random.state_dict(process, mid_epoch=state.batch_in_epoch > 0)
    if not process.writes:
        return
    checkpoint = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "config": vars(args),
        "netG": state.netG.state_dict(), "netD": state.netD.state_dict(),
        "optimizerG": state.optimizerG.state_dict(), "optimizerD": state.optimizerD.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
        "iteration": state.iteration, "batches_per_epoch": num_batches,
        "world_size": process.world_size, **streams, "data": data,
        "fixed_noise": state.fixed_noise.cpu(),
        "metrics": state.metrics.rows,
        "grids": state.img_list, "grid_iterations": state.img_iterations,
        "evals": evals, "health": health, "elapsed": state.seconds(),
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


def check_same_data(checkpoint, images, args, process):
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
    process.log(f"note: the images changed since the checkpoint ({what}); continuing on them, "
             "as --allow-changed-data asks: the run is no longer the uninterrupted one")


def restore_training(state, checkpoint, args, process, num_batches):
    """Loads a checkpoint into the freshly built training state."""
    state.netG.load_state_dict(checkpoint["netG"])
    state.netD.load_state_dict(checkpoint["netD"])
    load_optimizer_state(state.optimizerG, checkpoint["optimizerG"])
    load_optimizer_state(state.optimizerD, checkpoint["optimizerD"])
    if state.ema is not None:  # --ema may be turned on mid-run: it starts from G
        state.ema.load_state_dict(sampling_weights(checkpoint))
    state.fixed_noise.copy_(checkpoint["fixed_noise"])
    state.img_list, state.img_iterations = list(checkpoint["grids"]), list(checkpoint["grid_iterations"])
    state.elapsed, state.started = checkpoint["elapsed"], time.time()
    state.iteration = checkpoint["iteration"]
    state.epoch, state.batch_in_epoch = checkpoint["epoch"], checkpoint["batch_in_epoch"]
    if state.batch_in_epoch >= num_batches:  # saved after an epoch's last batch
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    reseed = None
    if checkpoint["world_size"] != process.world_size or checkpoint["batches_per_epoch"] != num_batches:
        process.log("note: the dataset size or the number of processes changed since the "
                 "checkpoint; the run continues, but not as the uninterrupted run would have")
        reseed = args.seed + process.rank + checkpoint["iteration"]
    state.random.load_state_dict(checkpoint, process, mid_epoch=state.batch_in_epoch > 0, reseed=reseed)
    process.log(f"Resuming {args.resume} at epoch {state.epoch}, batch {state.batch_in_epoch} "
             f"(iteration {state.iteration})")


def load_optimizer_state(optimizer, saved):
    """Adam's moments and steps from a checkpoint; lr and betas stay as built (from --lr,
    --lr-d, --lr-g, --beta1), so that a resume may change them."""
    built = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, hyperparameters in zip(optimizer.param_groups, built):
        group.update(hyperparameters)


def generator_from_weights(state_dict, path, Generator, config=None):
    """Rebuilds the Generator (the tutorial's class) that a state dict belongs to: from a
    checkpoint's configuration, or, for a bare netG.pt (the tutorial's own too), from the
    shapes of its weights."""
    state_dict = {k.removeprefix("module.").removeprefix("_orig_mod."): v
                  for k, v in state_dict.items()}
    try:
        if config:
            netG = Generator(config["nz"], config["ngf"], config["nc"], config["image_size"])
        else:
            convs = [v for k, v in state_dict.items() if k.startswith("main.") and v.dim() == 4]
            nz, ngf, nc = convs[0].shape[0], convs[-1].shape[0], convs[-1].shape[1]
            netG = Generator(nz, ngf, nc, image_size=4 * 2 ** (len(convs) - 1))
        netG.load_state_dict(state_dict)
    except (IndexError, KeyError, RuntimeError, ValueError):
        raise UserError(f"--checkpoint {path}: does not hold a DCGAN generator of this "
                        "program's architecture") from None
    return netG


def generator_from_checkpoint(path, device, Generator):
    """(G, config) from checkpoint.pt (its EMA generator if it has one) or netG.pt."""
    checkpoint = load_checkpoint(path, device)
    if checkpoint.get("format") == CHECKPOINT_FORMAT:
        weights = sampling_weights(checkpoint)
        if weights is None:
            raise UserError(f"--checkpoint {path}: a damaged checkpoint: it holds no generator; "
                            "use an intact copy, or netG.pt")
        config = checkpoint.get("config", {})
        return generator_from_weights(weights, path, Generator, config).to(device), config
    return generator_from_weights(checkpoint, path, Generator).to(device), {}
