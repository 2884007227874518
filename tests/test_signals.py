"""Stop signals under real faults: a closed terminal, SLURM's warning, a signal to one rank
under torchrun, a second signal during or before the checkpoint's write."""
import os
import signal

import pytest
import torch

import dcgan
from helpers import FIXTURES, assert_same_run, interrupt_at, run, tiny_argv, torchrun


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1])
def test_a_closed_terminal_or_slurms_warning_checkpoints_like_ctrl_c(tiny, tmp_path, monkeypatch,
                                                                     capsys, finished_run, signum):
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1, signum)
        status, out, err = run(tiny("parts"), capsys)
    assert status == 128 + signum
    assert f"Stopped by {signal.Signals(signum).name} after iteration 1;" in out
    assert run(["--outdir", str(tmp_path / "parts"), "--resume"]) == 0
    assert_same_run(finished_run(), tmp_path / "parts")


def test_under_torchrun_a_signal_to_one_rank_stops_every_rank_one_iteration_later(faces, tmp_path):
    """Rank 1 alone gets SIGTERM during iteration 4. Statistics and checkpoints are due
    only every 1000 iterations, yet both ranks stop after iteration 5 and checkpoint it."""
    argv = tiny_argv(faces, tmp_path / "out", tmp_path / "cache", "--num-epochs", "400",
                     "--log-every", "1000", "--sample-every", "1000", "--batch-size", "4")
    result = torchrun(os.path.join(FIXTURES, "ddp_probe.py"), "signal", "4", *argv)
    assert "Stopped by SIGTERM after iteration 5;" in result.stdout, result.stderr[-2000:]
    checkpoint = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 6 and len(checkpoint["metrics"]) == 6


def test_a_second_signal_during_the_checkpoint_write_waits_for_it(tiny, tmp_path, monkeypatch,
                                                                  capsys, finished_run):
    real_save = torch.save

    def save_while_signalled(obj, f):
        if isinstance(obj, dict) and obj.get("iteration") == 2:  # the stop's checkpoint
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal, mid-write
        return real_save(obj, f)
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        patch.setattr(dcgan.torch, "save", save_while_signalled)
        status, out, err = run(tiny("parts"), capsys)
    assert status == 128 + signal.SIGINT
    assert "dcgan.py: writing the checkpoint; the run stops once it is whole" in err
    assert "Traceback" not in err and "Stopped by SIGINT after iteration 1;" in out
    assert run(["--outdir", str(tmp_path / "parts"), "--resume"]) == 0
    assert_same_run(finished_run(), tmp_path / "parts")


def test_a_second_signal_before_the_write_stops_at_once_with_its_status(tiny, tmp_path, monkeypatch,
                                                                        capsys):
    assert run(tiny("out", "--max-iters", "2")) == 0
    before = (tmp_path / "out" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    real_step, calls = dcgan.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)
    monkeypatch.setattr(dcgan, "train_step", step)
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume", "--max-iters", "6"],
                           capsys)
    assert status == 128 + signal.SIGTERM
    assert err.strip() == ("dcgan.py: stopped at once by a second SIGTERM; the last checkpoint "
                           "is as it was")
    assert (tmp_path / "out" / "checkpoint.pt").read_bytes() == before
