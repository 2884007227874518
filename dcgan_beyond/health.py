"""Health: saying, while it happens, that a run is failing, and what to try."""
import math

import torch

from .data import image_count, real_uint8, to_rgb
from .files import atomic_write, csv_text
from .techniques import learning_rates


# The thresholds, from runs on the 8,000-face sample (docs/when-a-run-goes-wrong.md)
HEALTH_WINDOW = 50  # iterations that a verdict on the losses looks back over
D_WON_LOSS, D_WON_SHARE = 0.001, 0.9  # Loss_D below this in this share of the window
FLAT_LOSSES = 1e-3  # both losses moved less than this over the window
COLLAPSE_SPREAD = 0.1  # fixed-noise images this close (vs a real batch's spread), two grids running
HEALTH_DOC = "see docs/when-a-run-goes-wrong.md"


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
            lr_d, _ = learning_rates(self.args)
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
                 "message": f"warning: iteration {iteration}: {text}; {HEALTH_DOC}"}
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


class Monitor:
    """The health monitor beside the loop (rank 0's): hands it the rows and grids the loop
    already has; each warning is said once, written to health.csv, TensorBoard and the
    checkpoint, and with --on-failure stop asks the run to stop after this iteration: the
    one whose statistics flush (every --log-every batches) or fixed-noise grid showed the
    sign, which may be later than the iteration the warning names."""

    def __init__(self, args, process, images, pixels, outputs, stop, checkpoint=None):
        self.process, self.board, self.stop = process, outputs.board, stop
        self.path, self.stop_on_failure = outputs.path("health.csv"), args.on_failure == "stop"
        self.events = [dict(e) for e in checkpoint.get("health", [])] if checkpoint else []
        self.watch = None
        if process.writes:
            count = min(64, image_count(images, pixels))
            self.watch = HealthMonitor(args, real_uint8(images, pixels, list(range(count)), args.workers),
                                       self.events, checkpoint["metrics"] if checkpoint else ())
            write_health_csv(self.path, self.events)

    def check_losses(self, rows):
        """The metrics rows that reached the host since the last call."""
        if self.watch:
            self._report(self.watch.observe_rows(rows))

    def check_grid(self, grid, iteration):
        if self.watch:
            self._report(self.watch.observe_grid(iteration, grid))

    def _report(self, events):
        for event in events:
            self.process.log(event["message"])
            self.board.text(event["message"], event["iteration"])
        if events:
            self.events[:] = self.watch.events
            write_health_csv(self.path, self.events)
            if self.stop_on_failure:
                self.stop.stop_for_failure(events[0])
