"""Never lose a run: exact resume, safe checkpoints, interrupts, sampling."""
import json
import math
import os
import signal
import subprocess
import sys
import time

from PIL import Image
import numpy as np
import pytest
import torch

import dcgan
from dcgan_beyond import devices, sampling
from helpers import (RunsCode, assert_same_run, interrupt_at, make_images, one_error_line,
                     read_metrics, run, start, wait_for)



@pytest.mark.parametrize("stop_after, flags", [
    (2, ()), (3, ()), (5, ()), (2, ("--no-cache", "--workers", "2"))],
    ids=["mid-epoch", "epoch-end", "before-last", "mid-epoch-no-cache-2-workers"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tiny, tmp_path, monkeypatch, capsys,
                                                                  finished_run, stop_after, flags):
    """3 batches an epoch, 6 iterations: Ctrl-C mid-epoch (after 2), at an epoch's end
    (3), before the last iteration (5); then resumed from the checkpoint alone."""
    with monkeypatch.context() as patch:
        interrupt_at(patch, stop_after - 1)
        status, out, err = run(tiny("parts", *flags), capsys)
    assert status == 128 + signal.SIGINT
    assert f"Stopped by SIGINT after iteration {stop_after - 1};" in out  # 0-based, as the rows
    assert len(read_metrics(tmp_path / "parts" / "metrics.csv")) == stop_after
    assert run(["--outdir", str(tmp_path / "parts"), "--resume"]) == 0
    assert_same_run(finished_run(*flags), tmp_path / "parts")


def test_max_iters_run_resumes_to_the_same_weights(tiny, tmp_path, finished_run):
    """--max-iters ends a run (its last grid and figures), and resuming continues it: the
    weights equal an uninterrupted run's (the extra grid's forward pass moved only G's
    BatchNorm running statistics, as every grid of the tutorial's does)."""
    assert run(tiny("parts", "--max-iters", "2")) == 0
    assert run(["--outdir", str(tmp_path / "parts"), "--resume", "--max-iters", "6"]) == 0
    assert read_metrics(finished_run() / "metrics.csv") == read_metrics(tmp_path / "parts" / "metrics.csv")
    whole, parts = (torch.load(d / "netG.pt", weights_only=True) for d in (finished_run(), tmp_path / "parts"))
    assert all(torch.equal(whole[k], parts[k]) for k in whole if "running" not in k and "num_batches" not in k)


def resume_command(out):
    """The argv of the resume command that a stop line prints."""
    (line,) = [line for line in out.splitlines() if "Resume with: python dcgan.py " in line]
    return line.split("Resume with: python dcgan.py ")[1].split()


def test_a_stopped_max_iters_run_resumed_with_the_printed_command_stops_at_its_limit(
        tiny, tmp_path, monkeypatch, capsys):
    """Ctrl-C during iteration 1 of a --max-iters 4 run (6 iterations in 2 epochs); the
    printed command finishes the run as it was asked: at iteration 4, as the run done in one
    go; a resume that raises the limit says so."""
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        status, out, err = run(tiny("parts", "--max-iters", "4"), capsys)
    assert status == 128 + signal.SIGINT
    status, out, err = run(resume_command(out), capsys)
    assert status == 0, err
    assert "Resuming with changed settings" not in out
    assert run(tiny("whole", "--max-iters", "4")) == 0
    assert_same_run(tmp_path / "whole", tmp_path / "parts")
    status, out, err = run(["--resume", str(tmp_path / "parts" / "checkpoint.pt"),
                            "--max-iters", "5"], capsys)
    assert status == 0 and "Resuming with changed settings: --max-iters 4 -> 5" in out
    assert len(read_metrics(tmp_path / "parts" / "metrics.csv")) == 5


def test_a_max_iters_run_killed_with_kill_9_resumes_to_its_limit(tiny, tmp_path):
    argv = tiny("killed", "--num-epochs", "40", "--max-iters", "24", "--log-every", "1",
                "--checkpoint-every", "1")
    process = start(argv)
    metrics = tmp_path / "killed" / "metrics.csv"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) > 3)
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL  # killed mid-run, not finished
    assert run(["--resume", str(tmp_path / "killed" / "checkpoint.pt")]) == 0
    assert len(read_metrics(metrics)) == 24
    assert run(tiny("whole", "--num-epochs", "40", "--max-iters", "24", "--log-every", "1")) == 0
    assert_same_run(tmp_path / "whole", tmp_path / "killed")


def test_sigterm_writes_a_checkpoint_and_resume_finishes_identically(tiny, tmp_path):
    argv = tiny("killed", "--num-epochs", "40", "--log-every", "1")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(dcgan.__file__))
    process = subprocess.Popen([sys.executable, dcgan.__file__, *argv], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "killed" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 6):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    done = len(read_metrics(metrics))
    assert 5 <= done < 120
    assert (f"Stopped by SIGTERM after iteration {done - 1}; checkpoint written to "
            f"{tmp_path / 'killed' / 'checkpoint.pt'}. Resume with: python dcgan.py --resume "
            f"{tmp_path / 'killed' / 'checkpoint.pt'}") in out
    assert not (tmp_path / "killed" / "netG.pt").exists()
    # finish both runs at the same iteration: equal to a run never stopped
    stop = done + 4
    assert run(["--resume", str(tmp_path / "killed" / "checkpoint.pt"), "--max-iters", str(stop)]) == 0
    assert run(tiny("whole", "--num-epochs", "40", "--max-iters", str(stop))) == 0
    assert_same_run(tmp_path / "whole", tmp_path / "killed")


def test_checkpoint_holds_everything_resume_needs(tiny, tmp_path):
    assert run(tiny("out", "--max-iters", "4", "--ema", "0.9")) == 0
    outdir = tmp_path / "out"
    checkpoint = torch.load(outdir / "checkpoint.pt", weights_only=True)
    assert (checkpoint["format"], checkpoint["version"]) == ("dcgan.py checkpoint", 1)
    # the position of the next batch: 3 batches an epoch, 4 done
    assert (checkpoint["epoch"], checkpoint["batch_in_epoch"], checkpoint["iteration"]) == (1, 1, 4)
    assert (checkpoint["batches_per_epoch"], checkpoint["world_size"]) == (3, 1)
    # the networks are those written as netG.pt and netD.pt; each Adam took 4 steps
    for net in ("netG", "netD"):
        weights = torch.load(outdir / f"{net}.pt", weights_only=True)
        assert all(torch.equal(checkpoint[net][k], weights[k]) for k in weights), net
    for optimizer in ("optimizerG", "optimizerD"):
        assert {float(s["step"]) for s in checkpoint[optimizer]["state"].values()} == {4.0}
        assert checkpoint[optimizer]["param_groups"][0]["lr"] == 0.0002
    # the EMA generator: G's layout, other values (decay 0.9 over 4 steps)
    assert checkpoint["ema"].keys() == checkpoint["netG"].keys()
    assert not torch.equal(checkpoint["ema"]["main.0.weight"], checkpoint["netG"]["main.0.weight"])
    # every random stream of the one process, and the CPU state before the epoch's shuffle
    (streams,) = checkpoint["rng"]
    assert set(streams) == {"torch", "device", "device_type", "numpy", "python"}
    assert streams["device_type"] == "cpu" and streams["device"] is None
    (before_shuffle,) = checkpoint["epoch_rng"]
    assert before_shuffle.dtype == torch.uint8 and not torch.equal(before_shuffle, streams["torch"])
    # the fixed noise, the metrics rows, the grids and the configuration as written to disk
    assert checkpoint["fixed_noise"].shape == (64, 8, 1, 1)
    assert [row[:7] for row in checkpoint["metrics"]] == [
        [r[c] for c in ("epoch", "iteration", "Loss_D", "Loss_G", "D_x", "D_G_z1", "D_G_z2")]
        for r in read_metrics(outdir / "metrics.csv")]
    assert checkpoint["grid_iterations"] == [0, 3]
    for iteration, grid in zip(checkpoint["grid_iterations"], checkpoint["grids"]):
        with Image.open(outdir / "progress" / f"iter_{iteration:07d}.png") as image:
            assert torch.equal(torch.from_numpy(np.array(image)).permute(2, 0, 1), grid)
    assert checkpoint["config"] == json.loads((outdir / "config.json").read_text())


def test_a_crash_while_saving_leaves_the_last_checkpoint_intact(tiny, tmp_path, monkeypatch, capsys):
    assert run(tiny("out", "--max-iters", "2")) == 0
    path = tmp_path / "out" / "checkpoint.pt"
    before = path.read_bytes()

    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(dcgan.torch, "save", disk_full)
    capsys.readouterr()
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume", "--max-iters", "6"],
                           capsys)
    assert status == 2
    assert one_error_line(err) == (f"cannot write {path} (No space left on device); the "
                                   "previous checkpoint is intact; free some space and resume")
    assert path.read_bytes() == before
    assert [f for f in os.listdir(tmp_path / "out") if f.endswith(".tmp")] == []


def test_a_checkpoint_that_would_run_code_is_refused_not_run(tmp_path, capsys):
    marker, path = tmp_path / "pwned", tmp_path / "checkpoint.pt"
    torch.save({"netG": RunsCode(marker)}, path)
    for argv in (["--outdir", str(tmp_path), "--resume"], ["generate", "--checkpoint", str(path)]):
        status, out, err = run(argv, capsys)
        assert status == 2
        flag = "--resume" if "--resume" in argv else "--checkpoint"
        assert one_error_line(err) == (
            f"{flag} {path}: refused: the file holds Python objects that would run code "
            "when loaded; dcgan.py loads only tensors, numbers and text (use a checkpoint "
            "that dcgan.py wrote)")
    assert not marker.exists()


def test_broken_and_foreign_checkpoints(tiny, tmp_path, capsys):
    assert run(tiny("out", "--max-iters", "1")) == 0
    good = (tmp_path / "out" / "checkpoint.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    status, out, err = run(["generate", "--checkpoint", str(truncated)], capsys)
    assert status == 2 and one_error_line(err).startswith(
        f"--checkpoint {truncated}: cannot be read: truncated or corrupt (")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "step": 3}, foreign)
    status, out, err = run(["--resume", str(foreign)], capsys)
    assert status == 2 and one_error_line(err) == (
        f"--resume {foreign}: not a dcgan.py checkpoint (it has none of its fields) and not "
        "a state dict of weights")
    other_arch = tmp_path / "netG.pt"
    torch.save(torch.nn.Linear(3, 4).state_dict(), other_arch)
    status, out, err = run(["generate", "--checkpoint", str(other_arch)], capsys)
    assert status == 2 and one_error_line(err) == (
        f"--checkpoint {other_arch}: does not hold a DCGAN generator of this program's architecture")
    status, out, err = run(["--resume", str(tmp_path / "out" / "netG.pt")], capsys)
    assert status == 2 and one_error_line(err) == (
        f"--resume {tmp_path / 'out' / 'netG.pt'}: this file holds only network weights; "
        "resume needs the checkpoint.pt that training writes beside it")
    status, out, err = run(["--resume", str(tmp_path / "missing.pt")], capsys)
    assert status == 2 and one_error_line(err) == (
        f"--resume {tmp_path / 'missing.pt'}: no such file; train first, or give the path "
        "of a checkpoint.pt or netG.pt")


def test_resume_refuses_to_change_the_models_and_says_what_changes(tiny, tmp_path, capsys):
    assert run(tiny("out", "--max-iters", "2")) == 0
    capsys.readouterr()
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume", "--ngf", "8",
                            "--batch-size", "4", "--nz", "8"], capsys)
    assert status == 2
    assert one_error_line(err) == (
        f"--resume {tmp_path / 'out' / 'checkpoint.pt'}: the run was trained with other "
        "settings, which cannot change on resume: --ngf 4 -> 8, --batch-size 8 -> 4; drop "
        "these flags, or start a new run in another --outdir")
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume", "--num-epochs", "3",
                            "--log-every", "1", "--max-iters", "4"], capsys)
    assert status == 0, err
    assert ("Resuming with changed settings: --num-epochs 2 -> 3, --max-iters 2 -> 4, "
            "--log-every 2 -> 1") in out
    assert f"Resuming {tmp_path / 'out' / 'checkpoint.pt'} at epoch 0, batch 2 (iteration 2)" in out


def test_a_finished_run_trains_on_when_given_more_epochs(tiny, tmp_path, capsys):
    assert run(tiny("out")) == 0
    capsys.readouterr()
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume"], capsys)
    assert status == 0 and "Nothing to train: the run already has 6 iterations" in out
    assert run(["--outdir", str(tmp_path / "out"), "--resume", "--num-epochs", "3"]) == 0
    assert len(read_metrics(tmp_path / "out" / "metrics.csv")) == 9


def test_divergence_stops_with_the_iteration_and_keeps_the_checkpoint(tiny, tmp_path, capsys):
    assert run(tiny("out", "--max-iters", "2")) == 0
    path = tmp_path / "out" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    for key, value in checkpoint["netD"].items():
        if key.endswith("weight"):
            value.fill_(float("nan"))
    torch.save(checkpoint, path)
    before = path.read_bytes()
    capsys.readouterr()
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume", "--max-iters", "6"],
                           capsys)
    assert status == 2
    assert one_error_line(err) == (
        "training diverged at iteration 2: a loss or D output became NaN or infinite; the "
        f"last good checkpoint, {path}, is intact; resume from it with a lower --lr")
    assert path.read_bytes() == before


def test_non_finite_losses_are_caught_at_the_next_flush(tiny, tmp_path, capsys, monkeypatch):
    real_step = dcgan.train_step
    calls = []

    def step(*args, **kwargs):
        stats = real_step(*args, **kwargs)
        calls.append(1)
        return stats * float("inf") if len(calls) == 4 else stats
    monkeypatch.setattr(dcgan, "train_step", step)
    status, out, err = run(tiny("out", "--checkpoint-every", "2"), capsys)
    assert status == 2
    assert one_error_line(err).startswith("training diverged at iteration 3: ")
    # the checkpoint after iteration 2 (index) is the last one: it holds no bad row
    checkpoint = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 3 and len(checkpoint["metrics"]) == 3


def test_a_checkpoint_saved_on_another_device_resumes_here(tiny, tmp_path, monkeypatch, finished_run):
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        assert run(tiny("out")) == 128 + signal.SIGINT
    path = tmp_path / "out" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    for states in checkpoint["rng"]:  # as a CUDA run saves them
        states.update(device=torch.zeros(16, dtype=torch.uint8), device_type="cuda")
    torch.save(checkpoint, path)
    assert run(["--outdir", str(tmp_path / "out"), "--resume"]) == 0
    assert_same_run(finished_run(), tmp_path / "out")


def test_generate_samples_grid_single_files_and_a_repeatable_seed(tiny, tmp_path, capsys):
    assert run(tiny("out", "--max-iters", "2")) == 0
    for checkpoint in ("checkpoint.pt", "netG.pt"):
        outdir = tmp_path / checkpoint
        status, out, err = run(["generate", "--checkpoint", str(tmp_path / "out" / checkpoint),
                                "--outdir", str(outdir), "--num-samples", "10",
                                "--single-files", "--seed", "3"], capsys)
        assert status == 0, err
        with Image.open(outdir / "samples.png") as grid:
            assert grid.size == (4 * 34 + 2, 3 * 34 + 2)  # 10 images: 4 a row, 3 rows
        singles = sorted(f for f in os.listdir(outdir) if f != "samples.png")
        assert singles == [f"{k:06d}.png" for k in range(10)]
        with Image.open(outdir / "000000.png") as image:
            assert image.size == (32, 32) and image.mode == "RGB"
    # same seed, same images, whichever file they came from; another seed, others
    assert (tmp_path / "checkpoint.pt" / "samples.png").read_bytes() == \
        (tmp_path / "netG.pt" / "samples.png").read_bytes()
    run(["generate", "--checkpoint", str(tmp_path / "out" / "netG.pt"), "--outdir",
         str(tmp_path / "other"), "--num-samples", "10", "--seed", "4"])
    assert (tmp_path / "other" / "samples.png").read_bytes() != \
        (tmp_path / "netG.pt" / "samples.png").read_bytes()


def test_generate_interpolation_walks_between_two_faces(tiny, tmp_path, capsys):
    assert run(tiny("out", "--max-iters", "1")) == 0
    status, out, err = run(["generate", "--checkpoint", str(tmp_path / "out" / "checkpoint.pt"),
                            "--interpolate", "--rows", "3", "--steps", "5"], capsys)
    assert status == 0, err
    path = tmp_path / "out" / "samples" / "interpolation.png"
    with Image.open(path) as grid:
        assert grid.size == (5 * 34 + 2, 3 * 34 + 2)
    a, b = torch.randn(3, 8, 1, 1), torch.randn(3, 8, 1, 1)
    assert torch.allclose(sampling.slerp(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(sampling.slerp(a, b, 1.0), b, atol=1e-6)
    # spherical: the midpoint keeps the endpoints' norm when they have the same norm
    same_norm_b = b / b.flatten(1).norm(dim=1)[:, None, None, None] * a.flatten(1).norm(dim=1)[:, None, None, None]
    assert torch.allclose(sampling.slerp(a, same_norm_b, 0.5).flatten(1).norm(dim=1),
                          a.flatten(1).norm(dim=1), atol=1e-5)
    # orthogonal ends of equal length: the midpoint is their sum over sqrt(2)
    x, y = torch.zeros(1, 8, 1, 1), torch.zeros(1, 8, 1, 1)
    x[0, 0], y[0, 1] = 2.0, 2.0
    assert torch.allclose(sampling.slerp(x, y, 0.5), (x + y) / math.sqrt(2), atol=1e-6)


def test_tutorial_style_state_dicts_load_for_generate(tmp_path, capsys):
    """netG saved by the tutorial with --ngpu > 1 (nn.DataParallel) has 'module.' keys."""
    netG = dcgan.Generator(nz=8, ngf=4, image_size=64)
    torch.save({f"module.{k}": v for k, v in netG.state_dict().items()}, tmp_path / "dp.pt")
    status, out, err = run(["generate", "--checkpoint", str(tmp_path / "dp.pt"),
                            "--num-samples", "4"], capsys)
    assert status == 0, err
    with Image.open(tmp_path / "samples" / "samples.png") as grid:
        assert grid.size == (2 * 66 + 2, 2 * 66 + 2)


def test_fast_says_its_choice_and_a_resume_keeps_it_and_repeats_the_run(tiny, tmp_path, monkeypatch, capsys):
    """--fast on this CPU (bf16 autocast and channels-last where oneDNN has native bf16):
    the choice is printed and kept in the checkpoint, and an interrupted run resumes to the
    numbers of the run done in one go (the CPU's bf16 kernels are repeatable)."""
    chosen, judged = devices.fast_settings(torch.device("cpu"))
    line = (f"note: --fast on {judged}: {' '.join('--' + f.replace('_', '-') for f in chosen)} "
            "(the fastest measured there; the numbers change)")
    status, out, err = run(tiny("whole", "--fast"), capsys)
    assert status == 0, err
    assert line in out
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        assert run(tiny("parts", "--fast")) == 128 + signal.SIGINT
    status, out, err = run(["--outdir", str(tmp_path / "parts"), "--resume"], capsys)
    assert status == 0, err
    assert line in out
    config = torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)["config"]
    assert config["fast"] and all(config[flag] for flag in chosen)
    assert_same_run(tmp_path / "whole", tmp_path / "parts")


def test_resume_refuses_changed_images_unless_allowed(tmp_path, tiny, capsys):
    root = tmp_path / "data"
    make_images(root / "img_align_celeba", 16)
    assert run(tiny("out", "--max-iters", "2", dataroot=str(root))) == 0
    config = (tmp_path / "out" / "config.json").read_bytes()
    make_images(root / "img_align_celeba", 1, seed=5)  # 000000.jpg edited in place
    capsys.readouterr()
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume"], capsys)
    assert status == 2
    assert one_error_line(err) == (
        f"--resume {tmp_path / 'out' / 'checkpoint.pt'}: the images in --dataroot {root} "
        "changed since the checkpoint (as many images, 16, but a name, a size or a "
        "modification time differs), so the run would not continue as it would have; "
        "restore them, or give --allow-changed-data to go on with these")
    os.remove(root / "img_align_celeba" / "000003.jpg")
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume"], capsys)
    assert "(16 images then, 15 now)" in one_error_line(err)
    assert (tmp_path / "out" / "config.json").read_bytes() == config
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume",
                            "--allow-changed-data"], capsys)
    assert status == 0, err
    assert ("note: the images changed since the checkpoint (16 images then, 15 now); "
            "continuing on them, as --allow-changed-data asks") in out


@pytest.mark.parametrize("flags", [["--dataroot", "MISSING"],
                                   ["--eval-every", "2", "--eval-dataroot", "MISSING"],
                                   ["--image-size", "4096"],
                                   ["--num-epochs", "7", "--cache-dir", "FILE/sub"]])
def test_a_failed_resume_writes_nothing(tiny, tmp_path, capsys, flags):
    assert run(tiny("out", "--max-iters", "2")) == 0
    outdir = tmp_path / "out"
    before = {f: (outdir / f).read_bytes() for f in os.listdir(outdir) if (outdir / f).is_file()}
    (tmp_path / "a-file").write_text("x")
    flags = [str(tmp_path / "nowhere") if f == "MISSING" else
             str(tmp_path / "a-file" / "sub") if f == "FILE/sub" else f for f in flags]
    status, out, err = run(["--outdir", str(outdir), "--resume", *flags], capsys)
    assert status == 2 and one_error_line(err)
    after = {f: (outdir / f).read_bytes() for f in os.listdir(outdir) if (outdir / f).is_file()}
    assert after == before
