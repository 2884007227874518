"""--ema: an exponential moving average of G's weights."""

import torch


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
