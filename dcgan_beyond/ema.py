"""--ema: an exponential moving average of G's weights."""
import copy

import torch


def copy_of(netG):
    """The EMA generator: a copy of G that is averaged, never trained."""
    return copy.deepcopy(netG).requires_grad_(False)


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


def update(ema, model, iteration, decay, rampup):
    """The loop's call after iteration `iteration` (0-based), with the warmed-up decay;
    nothing without an EMA (ema None)."""
    if ema is not None:
        update_ema(ema, model, ema_decay(decay, rampup, iteration))


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
