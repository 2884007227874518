"""Progress shown while the run trains: the progress bar (or, when stderr is not a
terminal, one summary line an epoch) and the fixed-noise grids as PNG files."""
import sys
import time

from tqdm import tqdm

from .files import save_grid


class Report:
    """Rank 0's progress: a tqdm bar in images, a line an epoch in logs, progress/*.png.
    A context manager: closing it says the last, partial epoch."""

    def __init__(self, args, process, epoch, iteration, num_batches, outputs):
        self.process, self.outputs = process, outputs
        self.batch_size, self.num_epochs = args.batch_size, args.num_epochs
        self.bar = tqdm(total=args.num_epochs * num_batches, initial=iteration, unit="img",
                        unit_scale=args.batch_size, dynamic_ncols=True,
                        disable=None if process.writes else True)
        self.epoch_steps, self.epoch_clock, self.epoch = 0, time.time(), epoch

    def step(self):
        self.bar.update(1)
        self.epoch_steps += 1

    def grid(self, grid, iteration):
        """A fixed-noise grid as OUTDIR/progress/iter_NNNNNNN.png."""
        if self.process.writes:
            save_grid(grid, self.outputs.path("progress", f"iter_{iteration:07d}.png"))

    def end_epoch(self, epoch):
        """Without a progress bar (not a terminal), one line per epoch on stderr."""
        if self.process.writes and self.bar.disable:
            took = time.time() - self.epoch_clock
            print(f"epoch {epoch}/{self.num_epochs}: {self.epoch_steps} iterations in "
                  f"{took:.0f} s, {self.epoch_steps * self.batch_size / max(took, 1e-9):.1f} "
                  "images/s", file=sys.stderr)
        self.epoch_steps, self.epoch_clock, self.epoch = 0, time.time(), epoch + 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.epoch_steps and exc[0] is None:
            self.end_epoch(self.epoch)
        self.bar.close()
