"""--max-time: a run that ends when its training time reaches a limit (Colab's cut, SLURM's
time limit, an evening), with every output written as at the end."""
import re

import torch
import torch.distributed as dist

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text):
    """Seconds in a duration: 3600, 3600s, 90m, 2h, 1h30m, 1.5h; None if it is not one."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        return None
    if len(parts) > 1 and not all(unit for _, unit in parts):
        return None  # "1h30" is ambiguous
    return sum(float(number) * UNITS[unit or "s"] for number, unit in parts)


def duration_text(seconds):
    """3600 -> '1h', 5400 -> '1h30m', 90 -> '1m30s', 0.25 -> '0.25s'."""
    if seconds < 60:
        return f"{seconds:.3g}s"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if value)
    return text or "0s"


class TimeLimit:
    """Whether the run's training time (the `seconds` column: earlier processes of a resumed
    run included) has reached --max-time. Under torchrun the ranks agree on it after every
    iteration (a MAX of one number on a Gloo group), so that all of them end at the same
    iteration. Without --max-time it is never reached and costs nothing."""

    def __init__(self, max_seconds, process):
        self.max_seconds, self.process, self.hit = max_seconds, process, False
        self.group = None
        if max_seconds is not None and process.world_size > 1:
            self.group = dist.new_group(backend="gloo")  # beside NCCL too: no GPU sync

    def reached(self, seconds):
        if self.max_seconds is None:
            return False
        hit = seconds >= self.max_seconds
        if self.process.world_size > 1:
            vote = torch.tensor(int(hit))
            dist.all_reduce(vote, op=dist.ReduceOp.MAX, group=self.group)
            hit = bool(vote.item())
        self.hit = hit
        return hit

    def report(self, iteration, seconds, checkpoint_file):
        """After a run that the limit ended: one line that says so and how to go on."""
        if self.hit:
            self.process.log(
                f"Stopped for time after iteration {iteration - 1}: {duration_text(seconds)} of "
                f"training reached --max-time {duration_text(self.max_seconds)}; every output is "
                f"written. Go on with: python dcgan.py --resume {checkpoint_file} --max-time "
                "LONGER (the whole run's time, e.g. "
                f"{duration_text(2 * self.max_seconds)})")
