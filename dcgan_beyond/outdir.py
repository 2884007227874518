"""The run's hold on --outdir: an exclusive lock for the whole run, the configuration said
and saved, and the TensorBoard log that lives there."""
import contextlib
import json
import os
import socket
import time

import torch

from .errors import UserError, reason
from .files import atomic_write, locks_supported, take_lock, writable_folder
from .tensorboard_log import TensorBoardLog, summary_writer


def lock_path(outdir):
    return os.path.join(outdir, "run.lock")


def check_free(outdir):
    """Before anything is written: one line if another run holds the outdir now, or if an
    earlier run's lock there cannot be opened (a read-only checkout)."""
    if os.path.exists(lock_path(outdir)):
        try:
            held = take_lock(lock_path(outdir), wait=False)
        except OSError as error:
            raise UserError(f"--outdir {outdir}: cannot write there ({reason(error)}); "
                            "choose a writable folder") from None
        if held is None:
            refuse(outdir)
        held.close()


def refuse(outdir):
    with open(lock_path(outdir)) as f:
        holder = f.read().strip() or "another process"
    raise UserError(f"--outdir {outdir}: another run is writing there ({holder}); "
                    "wait for it to end or stop it, or choose another --outdir")


@contextlib.contextmanager
def hold(args, process):
    """Once every input is checked: takes the outdir for this run (rank 0), opens the
    TensorBoard log and prints the configuration; yields the run's Outputs and lets go of
    the outdir when the run ends, however it ends."""
    outputs = Outputs(args.outdir)
    with contextlib.ExitStack() as undo:
        undo.callback(outputs.close)
        if process.writes:
            writable_folder("--outdir", args.outdir)
            os.makedirs(outputs.path("progress"), exist_ok=True)
            if not outputs.lock():
                process.log("note: no file locks here (fcntl); nothing stops a second run from "
                            "writing into the same --outdir")
            if args.tensorboard:
                outputs.board = TensorBoardLog(summary_writer()(outputs.path("tensorboard")))
            process.log("Configuration:")
            for key, value in vars(args).items():
                process.log(f"  {key}: {value}")
            process.log(f"  (device: {process.device}, processes: {process.world_size}, "
                        f"torch {torch.__version__})")
        yield outputs


def write_config(args, process):
    """config.json: the run's first write over an earlier run's files, once the data is
    loaded."""
    if process.writes:
        atomic_write(os.path.join(args.outdir, "config.json"),
                     lambda f: f.write(json.dumps(vars(args), indent=2).encode()))


class Outputs:
    """The run's outdir: the lock on OUTDIR/run.lock, so that a second run there stops at
    once, and the TensorBoard log (one that writes nothing without --tensorboard)."""

    def __init__(self, outdir):
        self.outdir, self.lock_file, self.board = outdir, None, TensorBoardLog(None)

    def path(self, *names):
        return os.path.join(self.outdir, *names)

    def lock(self):
        """Takes the lock, or says in one line which run holds it. False without fcntl."""
        self.lock_file = take_lock(lock_path(self.outdir), wait=False)
        if self.lock_file is None:
            refuse(self.outdir)
        self.lock_file.truncate(0)
        self.lock_file.write(f"PID {os.getpid()} on {socket.gethostname()}, since "
                             f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.lock_file.flush()
        return locks_supported()

    def close(self):
        self.board.close()
        if self.lock_file:
            self.lock_file.close()  # lets go of the lock
            self.lock_file = None
