"""Stopping: stop signals turned into a checkpoint and a clean exit, and divergence."""
import contextlib
import signal
import sys

import torch
import torch.distributed as dist

from .devices import finish_distributed


# Ctrl-C, kill, a closed terminal, SLURM's warning before its time limit (--signal): each
# writes a checkpoint and ends the run (the last two do not exist on Windows).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1")
                     if hasattr(signal, name))


FAILURE_STOP = 256  # what StopRequest holds instead of a signal's number: --on-failure stop
FAILURE_EXIT = 3  # --on-failure stop: the exit status


class StopRequest:
    """Turns the stop signals into a flag that the loop checks after each iteration, so that
    the run writes a checkpoint and says how to resume. Under torchrun the ranks vote every
    iteration without waiting: each vote is summed (on Gloo, on the CPU) while the next
    iteration runs, so every rank stops after the same iteration, one after the signal."""

    def __init__(self, process):
        self.process, self.signum, self.stopping, self.saving = process, None, False, False
        self.failure = None  # the health warning that stops the run (--on-failure stop)
        self.group = self.vote = self.counting = None
        if process.world_size > 1:  # a CPU group even beside NCCL: a vote never syncs the GPU
            self.group = dist.new_group(backend="gloo") if process.device.type == "cuda" else None

    def requested(self):
        """True (and `stopping` set) once this process, or under torchrun any rank, got a
        stop signal."""
        if self.process.world_size == 1:
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

    def stop_for_failure(self, event):
        """--on-failure stop: the run stops after this iteration, as on a signal."""
        self.signum, self.failure = self.signum or FAILURE_STOP, event

    def report(self, iteration, checkpoint_file):
        """After the stop: says why and how to resume; returns the exit status, 128 + the
        signal's number (or FAILURE_EXIT). `iteration`: the next one."""
        if self.signum == FAILURE_STOP:
            seen = ("its fixed-noise grid was made" if self.failure["signal"] == "g_collapsed"
                    else "its statistics reached the host, every --log-every batches")
            how = (f"after iteration {iteration - 1}: the run is failing (--on-failure stop: "
                   f"warned at iteration {self.failure['iteration']}, seen when {seen})")
        else:
            how = f"by {signal.Signals(self.signum).name} after iteration {iteration - 1}"
        self.process.log(f"Stopped {how}; checkpoint written to {checkpoint_file}. Resume "
                      f"with: python dcgan.py --resume {checkpoint_file}")
        finish_distributed(self.process)
        return FAILURE_EXIT if self.signum == FAILURE_STOP else 128 + self.signum

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


def check_finite(*networks):
    """Raises Diverged if a weight of the networks is NaN or infinite: after an error in
    the step, the numbers tell a diverged run from a bug."""
    for network in networks:
        if not all(torch.isfinite(p).all() for p in network.parameters()):
            raise Diverged() from None
