"""The run: every input checked before anything is written, the outdir held, and the
extras around the tutorial's loop (`Extras`)."""
import contextlib
import copy
import json
import os
import signal
import socket
import sys
import time

import torch
from tqdm import tqdm

from .better_faces import DiffAugment
from .checkpoints import check_same_data, checkpoint_path, restore_training, save_checkpoint
from .data import check_cache_folder, file_digest, open_eval_images, real_uint8
from .devices import barrier, broadcast, check_network_memory, finish_distributed, prepare_for_training
from .download import download_celeba, wait_for_download
from .ema import ema_decay, update_ema
from .errors import UserError
from .fidelity import evaluators, inception_weights, measure_all, metric_names
from .files import atomic_write, locks_supported, save_grid, take_lock, writable_folder
from .health import FAILURE_EXIT, HealthMonitor, write_health_csv
from .metrics import Metrics, log_scalars, summary_writer, write_eval_csv
from .stopping import FAILURE_STOP, StopRequest


def open_inputs(args, proc, checkpoint, make_dataset, models):
    """Checks every input before anything is written or downloaded, the cheap checks first:
    the networks (part I's classes, `models`) against the device's memory, TensorBoard, a
    run that holds the outdir now, an earlier run's checkpoint there. Then downloads CelebA when asked, opens the
    dataset and the held-out one (or None) with part I's make_dataset, compares them with a
    resumed run's, checks the cache folder, and last fetches FID's Inception weights
    (92 MB). Returns both datasets."""
    check_network_memory(args, proc, models)
    if args.tensorboard:
        summary_writer()
    if proc.writes:
        Outputs(args.outdir).check_free()
    if proc.writes and checkpoint is None and os.path.exists(checkpoint_path(args.outdir)):
        raise UserError(f"--outdir {args.outdir}: holds the checkpoint of an earlier run; "
                        "continue it with --resume, or start afresh in another --outdir (or "
                        f"after deleting {checkpoint_path(args.outdir)})")
    if args.download or args.download_from:
        if proc.writes:
            download_celeba(args.dataroot, args.download_from)
        else:
            wait_for_download(args.dataroot, proc)
    barrier(proc)
    images = make_dataset(args.dataroot, args.image_size, args.nc)
    if checkpoint is not None:
        check_same_data(checkpoint, images, args, proc)
    held_out = open_eval_images(args, images, make_dataset) if args.eval_every else None
    if proc.writes:
        check_cache_folder(images, args)
    if args.eval_every and {"fid", "kid"} & set(metric_names(args)):
        inception_weights(args.fid_weights)  # or one line: before anything is written
    return images, held_out


def start_run(args, proc, checkpoint):
    """Once every input is checked: takes the outdir for this run and prints the
    configuration (prepare_training writes config.json, once the data is loaded). Returns
    the run's Outputs, to hold (with) for the whole run."""
    outputs = Outputs(args.outdir)
    if proc.writes:
        with contextlib.ExitStack() as undo:  # on an error here, the outdir is let go
            undo.callback(outputs.close)
            writable_folder("--outdir", args.outdir)
            os.makedirs(outputs.path("progress"), exist_ok=True)
            if not outputs.lock():
                proc.log("note: no file locks here (fcntl); nothing stops a second run from "
                         "writing into the same --outdir")
            if args.tensorboard:
                outputs.tensorboard = summary_writer()(outputs.path("tensorboard"))
            proc.log("Configuration:")
            for key, value in vars(args).items():
                proc.log(f"  {key}: {value}")
            proc.log(f"  (device: {proc.device}, processes: {proc.world_size}, torch {torch.__version__})")
            undo.pop_all()
    return outputs


class Outputs(contextlib.AbstractContextManager):
    """The run's hold on --outdir: an exclusive lock on OUTDIR/run.lock for the whole run,
    so that a second run there stops at once, and the TensorBoard writer."""

    def __init__(self, outdir):
        self.outdir, self.lock_file, self.tensorboard = outdir, None, None

    def path(self, *names):
        return os.path.join(self.outdir, *names)

    def check_free(self):
        """Before anything is written: one line if another run holds the outdir now."""
        if os.path.exists(self.path("run.lock")):
            held = take_lock(self.path("run.lock"), wait=False)
            if held is None:
                self._refuse()
            held.close()

    def lock(self):
        """Takes the lock, or says in one line which run holds it. False without fcntl."""
        self.lock_file = take_lock(self.path("run.lock"), wait=False)
        if self.lock_file is None:
            self._refuse()
        self.lock_file.truncate(0)
        self.lock_file.write(f"PID {os.getpid()} on {socket.gethostname()}, since "
                             f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.lock_file.flush()
        return locks_supported()

    def _refuse(self):
        with open(self.path("run.lock")) as f:
            holder = f.read().strip() or "another process"
        raise UserError(f"--outdir {self.outdir}: another run is writing there ({holder}); "
                        "wait for it to end or stop it, or choose another --outdir")

    def close(self):
        if self.tensorboard:
            self.tensorboard.close()
            self.tensorboard = None
        if self.lock_file:
            self.lock_file.close()  # lets go of the lock
            self.lock_file = None

    def __exit__(self, *exc):
        self.close()


def prepare_training(state, args, proc, checkpoint, num_batches):
    """Set-up before the loop: the EMA generator, the checkpoint's state, config.json and
    the metrics file (the run's first writes over an earlier run's files, now that the data
    is loaded), and the networks as the step runs them (channels-last, autocast, compile,
    DDP)."""
    if proc.writes:
        atomic_write(os.path.join(args.outdir, "config.json"),
                     lambda f: f.write(json.dumps(vars(args), indent=2).encode()))
    broadcast(state.fixed_noise, proc)  # every rank draws the grids (SyncBatchNorm): same noise
    if args.ema is not None:
        state.ema = copy.deepcopy(state.netG).requires_grad_(False)  # averaged, never trained
    if args.diffaug:
        state.augment = DiffAugment(args.diffaug)
    if checkpoint is not None:
        restore_training(state, checkpoint, args, proc, num_batches)
    state.metrics = Metrics(os.path.join(args.outdir, "metrics.csv"),
                            checkpoint["metrics"] if checkpoint else [], write=proc.writes)
    state.trainG = prepare_for_training(state.netG, args, proc)
    state.trainD = prepare_for_training(state.netD, args, proc, logits=state.logits)


class Extras:
    """What this program adds around the tutorial's loop, each as one call from it: the EMA,
    the progress bar, TensorBoard, grids on disk, SWD, checkpoints, stopping on a signal.
    None changes the loop's position. A context manager: it holds the signal handlers."""

    def __init__(self, args, proc, state, images, pixels, held_out, outputs, num_batches):
        self.args, self.proc, self.state = args, proc, state
        self.tensorboard, self.out = outputs.tensorboard, outputs.path
        self.checkpoint_file, self.num_batches = checkpoint_path(args.outdir), num_batches
        # what the checkpoint records of the data, so that a resume can tell a change
        self.data = {"images": len(images), "digest": file_digest(images)}
        self.evaluators = evaluators(images, pixels, held_out, args, proc.device, proc.log) \
            if args.eval_every and proc.writes else []
        count = len(images) if pixels is None else len(pixels)
        self.health = (HealthMonitor(args, real_uint8(images, pixels, list(range(min(64, count))),
                                                      args.workers), state.health, state.metrics.rows)
                       if proc.writes else None)
        if proc.writes:
            write_eval_csv(self.out("eval.csv"), state.evals)
            write_health_csv(self.out("health.csv"), state.health)
        self.bar = tqdm(total=args.num_epochs * num_batches, initial=state.iteration, unit="img",
                        unit_scale=args.batch_size, dynamic_ncols=True,
                        disable=None if proc.writes else True)
        self.stop = StopRequest(proc)
        self.epoch_steps, self.epoch_clock = 0, time.time()
        self.logged_rows = len(state.metrics.rows)
        self.failure = None  # the health event that stops the run, with --on-failure stop

    def __enter__(self):
        self.stop.__enter__()
        return self

    def __exit__(self, *exc):
        self.stop.__exit__(*exc)
        if self.epoch_steps and exc[0] is None:
            self._epoch_summary(self.state.epoch)
        self.bar.close()
        if self.tensorboard:
            self.after_stats()

    def after_step(self):
        if self.state.ema is not None:
            decay = ema_decay(self.args.ema, self.args.ema_rampup, self.state.iteration - 1)
            update_ema(self.state.ema, self.state.netG, decay)
        self.bar.update(1)
        self.epoch_steps += 1

    def after_stats(self):
        """Gives TensorBoard and the health monitor the rows that reached the host since
        the last call (a checkpoint brings rows to the host too)."""
        rows = self.state.metrics.rows[self.logged_rows:]
        self.logged_rows = len(self.state.metrics.rows)
        if self.tensorboard:
            log_scalars(self.tensorboard, rows)
        if self.health:
            self._report(self.health.observe_rows(rows))

    def after_grid(self):
        iteration, grid = self.state.img_iterations[-1], self.state.img_list[-1]
        if self.proc.writes:
            save_grid(grid, self.out("progress", f"iter_{iteration:07d}.png"))
        if self.tensorboard:
            self.tensorboard.add_image("fixed_noise", grid, iteration)
        if self.health:
            self._report(self.health.observe_grid(iteration, grid))

    def _report(self, events):
        """The health monitor's warnings: said once, recorded, and with --on-failure
        stop, a stop after this iteration: the one whose statistics flush (every --log-every
        batches) or fixed-noise grid showed the sign, which may be later than the iteration
        the warning names."""
        for event in events:
            self.proc.log(event["message"])
            if self.tensorboard:
                self.tensorboard.add_text("health", event["message"], event["iteration"])
        if events:
            self.state.health = self.health.events
            write_health_csv(self.out("health.csv"), self.state.health)
            if self.args.on_failure == "stop":
                self.failure = events[0]
                self.stop.stop_for_failure()

    def measure(self, iters, last):
        """--eval-metrics every --eval-every iterations and at the end, into eval.csv."""
        if self.evaluators and (iters % self.args.eval_every == 0 or last):
            self.state.evals.append(measure_all(self.evaluators, self.state.sampleG, iters))
            write_eval_csv(self.out("eval.csv"), self.state.evals)
            for key in ("swd_avg", "fid", "kid"):
                if self.tensorboard and key in self.state.evals[-1]:
                    self.tensorboard.add_scalar(key, self.state.evals[-1][key], iters)

    def save_checkpoint(self, iters, due=False):
        """Writes checkpoint.pt when due (the end, a stop) or every --checkpoint-every."""
        if due or iters % self.args.checkpoint_every == 0:
            self.save()

    def end_epoch(self, epoch):
        self._epoch_summary(epoch)
        self.save()

    def save(self):
        with self.stop.deferred():  # a second signal now waits for the file to be whole
            save_checkpoint(self.checkpoint_file, self.args, self.state, self.proc,
                            self.num_batches, self.data)

    def _epoch_summary(self, epoch):
        """Without a progress bar (not a terminal), one line per epoch on stderr."""
        if self.proc.writes and self.bar.disable:
            took = time.time() - self.epoch_clock
            print(f"epoch {epoch}/{self.args.num_epochs}: {self.epoch_steps} iterations in "
                  f"{took:.0f} s, {self.epoch_steps * self.args.batch_size / max(took, 1e-9):.1f} "
                  "images/s", file=sys.stderr)
        self.epoch_steps, self.epoch_clock = 0, time.time()

    def stopped(self):
        """After a signal (or a failure, with --on-failure stop): says how to resume;
        returns the exit status, 128 + the signal's number (or FAILURE_EXIT)."""
        failed = self.stop.signum == FAILURE_STOP
        seen = ("its fixed-noise grid was made" if failed and self.failure["signal"] == "g_collapsed"
                else "its statistics reached the host, every --log-every batches")
        how = (f"after iteration {self.state.iteration - 1}: the run is failing (--on-failure "
               f"stop: warned at iteration {self.failure['iteration']}, seen when {seen})"
               if failed else f"by {signal.Signals(self.stop.signum).name} after iteration "
               f"{self.state.iteration - 1}")
        self.proc.log(f"Stopped {how}; checkpoint written to {self.checkpoint_file}. Resume "
                      f"with: python dcgan.py --resume {self.checkpoint_file}")
        finish_distributed(self.proc)
        return FAILURE_EXIT if failed else 128 + self.stop.signum

    def diverged(self, error):
        iteration = self.state.iteration if error.iteration is None else error.iteration
        path = self.checkpoint_file
        advice = (f"the last good checkpoint, {path}, is intact; resume from it with a lower "
                  "--lr" if os.path.exists(path) else "no checkpoint was written before it; "
                  "start again with a lower --lr")
        return UserError(f"training diverged at iteration {iteration}: a loss or D output "
                         f"became NaN or infinite; {advice}")
