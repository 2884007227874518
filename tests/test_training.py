"""Training: the outputs, the tutorial's numbers, and what a step touches."""
import copy
import json
import os
import subprocess
import sys
import time

from PIL import Image
import pytest
import torch
import torch.nn as nn
import torch.optim as optim
from tutorial_reference import run_tutorial

import dcgan
from dcgan_beyond import checkpoints, cli, data, devices
from helpers import make_images, read_metrics, run, tiny_models


def test_smoke_run_writes_every_output(tiny, tmp_path, capsys):
    status, out, err = run(tiny(), capsys)
    assert status == 0, err
    outdir = tmp_path / "out"
    # 20 images, batch 8: 3 batches an epoch, 6 iterations; stats lines at batches 0 and 2
    assert out.count("Loss_D:") == 4
    assert "Random Seed:  999" in out and "Starting Training Loop..." in out
    assert "Generator(" in out and "Discriminator(" in out
    rows = read_metrics(outdir / "metrics.csv")
    assert [r["iteration"] for r in rows] == list(range(6))
    assert [r["epoch"] for r in rows] == [0, 0, 0, 1, 1, 1]
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rows)
    # the tutorial's figures (8x8, 10x5 and 15x15 inches at 100 dpi) trimmed to their content;
    # a batch of 8 images makes a grid of one row
    for name, (width, height) in {"training_images.png": (800, 800), "loss_curve.png": (1000, 500),
                                  "real_vs_fake.png": (1500, 1500)}.items():
        with Image.open(outdir / name) as image:
            assert image.format == "PNG" and image.mode == "RGBA"
            assert 0.5 * width < image.size[0] <= width and 100 < image.size[1] <= height
    # grids every 4 iterations and at the last one: 0, 4, 5; 8 x 8 images of 32 px, padding 2
    grids = sorted(os.listdir(outdir / "progress"))
    assert grids == ["iter_0000000.png", "iter_0000004.png", "iter_0000005.png"]
    for name in grids:
        with Image.open(outdir / "progress" / name) as image:
            assert image.size == (8 * 34 + 2, 8 * 34 + 2)
    with Image.open(outdir / "progress.gif") as gif:
        assert gif.n_frames == 3
    config = json.loads((outdir / "config.json").read_text())
    assert config["image_size"] == 32 and config["batch_size"] == 8 and config["lr"] == 0.0002
    netG = dcgan.Generator(nz=8, ngf=4, image_size=32)
    netG.load_state_dict(torch.load(outdir / "netG.pt", weights_only=True))
    netD = dcgan.Discriminator(ndf=4, image_size=32)
    netD.load_state_dict(torch.load(outdir / "netD.pt", weights_only=True))


@pytest.mark.parametrize("flags", [[], ["--no-cache", "--workers", "2"]],
                         ids=["cache", "no-cache-2-workers"])
def test_same_numbers_as_the_tutorials_code(tmp_path, faces, flags):
    """The tutorial's own program and dcgan.py, same seed, same images: equal numbers."""
    iters = 6
    expected, tutG, tutD, _, _ = run_tutorial(faces, iters, nz=8, ngf=4, ndf=4, batch_size=8)
    argv = ["--dataroot", faces, "--outdir", str(tmp_path / "out"), "--cache-dir",
            str(tmp_path / "cache"), "--nz", "8", "--ngf", "4", "--ndf", "4",
            "--batch-size", "8", "--max-iters", str(iters), *flags]
    assert run(argv) == 0
    rows = read_metrics(tmp_path / "out" / "metrics.csv")
    got = [(r["Loss_D"], r["Loss_G"], r["D_x"], r["D_G_z1"], r["D_G_z2"]) for r in rows]
    assert got == expected
    for ours, theirs in (("netG.pt", tutG), ("netD.pt", tutD)):
        state = torch.load(tmp_path / "out" / ours, weights_only=True)
        for key, value in theirs.state_dict().items():
            if "running" in key or "num_batches" in key:
                continue  # the fixed-noise grids also update G's BatchNorm statistics
            assert torch.equal(state[key], value), key


def test_stats_line_has_the_tutorials_format():
    line = dcgan.stats_line(0, 5, 50, 63, [0.24551, 16.77433, 0.924, 0.00001, 0.0])
    assert line == "[0/5][50/63]\tLoss_D: 0.2455\tLoss_G: 16.7743\tD(x): 0.9240\tD(G(z)): 0.0000 / 0.0000"


def test_same_seed_gives_identical_metrics(tiny, tmp_path, finished_run):
    assert run(tiny("again")) == 0
    first = read_metrics(finished_run() / "metrics.csv")
    assert first == read_metrics(tmp_path / "again" / "metrics.csv")
    assert run(tiny("other", "--seed", "1")) == 0
    assert read_metrics(tmp_path / "other" / "metrics.csv") != first


def test_cache_gives_the_tutorial_pipelines_pixels(faces, tmp_path):
    images = dcgan.make_dataset(faces, 32, 3)
    pixels = data.load_pixel_cache(images, 32, 3, str(tmp_path), workers=0)
    cpu = devices.Process(device=torch.device("cpu"))
    torch.manual_seed(5)
    cached = data.Batches(images, pixels, 8, 0, cpu).first()
    torch.manual_seed(5)
    decoded = data.Batches(images, None, 8, 0, cpu).first()
    assert cached.dtype == decoded.dtype == torch.float32
    assert torch.equal(cached, decoded)
    everything = torch.stack([images[i] for i in range(len(images))])
    assert torch.equal(data.normalize_pixels(pixels), everything)


def test_cache_is_reused_and_rebuilt_when_the_files_change(tmp_path, capsys):
    root = make_images(tmp_path / "data" / "img_align_celeba", 5)
    images = dcgan.make_dataset(str(tmp_path / "data"), 32, 3)
    data.load_pixel_cache(images, 32, 3, str(tmp_path / "cache"), workers=0)
    assert "Decoded 5 images" in capsys.readouterr().out
    data.load_pixel_cache(images, 32, 3, str(tmp_path / "cache"), workers=0)
    assert "Decoded" not in capsys.readouterr().out
    make_images(root, 1, seed=9)  # rewrites 000000.jpg with other pixels
    os.utime(root / "000000.jpg", ns=(1, 1))
    images = dcgan.make_dataset(str(tmp_path / "data"), 32, 3)
    pixels = data.load_pixel_cache(images, 32, 3, str(tmp_path / "cache"), workers=0)
    assert "Decoded 5 images" in capsys.readouterr().out
    assert torch.equal(pixels[0].float().div(255).sub(0.5).div(0.5), images[0])


def tiny_gan(seed=0):
    netG, netD = tiny_models(seed)
    optG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    return netG, netD, optG, optD


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_d_step_leaves_g_alone_and_g_step_leaves_d_alone():
    netG, netD, optG, optD = tiny_gan()
    real, noise = torch.randn(8, 3, 32, 32), torch.randn(8, 8, 1, 1)
    g0, d0 = params(netG), params(netD)
    fake, *_ = dcgan.d_step(netG, netD, optD, nn.BCELoss(), real, noise)
    assert all(torch.equal(a, b) for a, b in zip(params(netG), g0))
    assert not all(torch.equal(a, b) for a, b in zip(params(netD), d0))
    d1 = params(netD)
    d_grads = [p.grad.clone() for p in netD.parameters()]
    dcgan.g_step(netG, netD, optG, nn.BCELoss(), fake)
    assert all(torch.equal(a, b) for a, b in zip(params(netD), d1))
    assert not all(torch.equal(a, b) for a, b in zip(params(netG), g0))
    # G's loss put no gradient into D (the tutorial's thrown-away work is skipped) ...
    assert all(torch.equal(p.grad, g) for p, g in zip(netD.parameters(), d_grads))
    assert all(p.requires_grad for p in netD.parameters())


def test_freezing_d_in_the_g_step_changes_no_number():
    netG, netD, optG, optD = tiny_gan()
    twinG, twinD = copy.deepcopy(netG), copy.deepcopy(netD)
    twin_optG = optim.Adam(twinG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    real, noise = torch.randn(8, 3, 32, 32), torch.randn(8, 8, 1, 1)
    fake, *_ = dcgan.d_step(netG, netD, optD, nn.BCELoss(), real, noise)
    twinD.load_state_dict(netD.state_dict())
    twin_fake = twinG(noise)
    dcgan.g_step(netG, netD, optG, nn.BCELoss(), fake)
    # ... the tutorial's way: D's weights take part in the backward pass
    twinG.zero_grad()
    loss = nn.BCELoss()(twinD(twin_fake).view(-1), torch.ones(8))
    loss.backward()
    twin_optG.step()
    assert all(torch.equal(a, b) for a, b in zip(params(netG), params(twinG)))


def test_flat_folder_grayscale_and_rgba_images_train(tmp_path, tiny, capsys):
    flat = tmp_path / "flat"
    make_images(flat, 6, mode="L")
    make_images(flat / "more", 2, mode="RGBA", seed=1)  # below the root: included too
    make_images(tmp_path / "extra", 4, seed=2)
    for name in os.listdir(tmp_path / "extra"):
        os.rename(tmp_path / "extra" / name, flat / f"x{name}")
    images = dcgan.make_dataset(str(flat), 32, 3)
    assert len(images) == 12 and images[0].shape == (3, 32, 32)
    assert dcgan.make_dataset(str(flat), 32, 1)[0].shape == (1, 32, 32)
    status, out, err = run(tiny("gray", "--nc", "1", "--max-iters", "2", dataroot=str(flat)), capsys)
    assert status == 0, err
    with Image.open(tmp_path / "gray" / "progress" / "iter_0000000.png") as image:
        assert image.mode == "RGB" and image.size == (274, 274)


def test_unreadable_images_are_skipped_and_named(tmp_path, tiny, capsys):
    root = tmp_path / "broken"
    make_images(root / "img_align_celeba", 10)
    (root / "img_align_celeba" / "000003.jpg").write_bytes(b"not a jpeg at all")
    good = (root / "img_align_celeba" / "000004.jpg").read_bytes()
    (root / "img_align_celeba" / "000004.jpg").write_bytes(good[: len(good) // 2])
    for flags in ([], ["--no-cache"]):
        status, out, err = run(tiny(f"b{len(flags)}", "--max-iters", "2", *flags,
                                    dataroot=str(root)), capsys)
        assert status == 0, err
        assert "warning: skipping unreadable image" in err
        assert "000003.jpg" in err and "000004.jpg" in err
        assert "Traceback" not in err
    # the cache holds the 8 good images and lists the others
    info = [f for f in os.listdir(tmp_path / "cache") if f.startswith("faces-10-") and f.endswith(".json")]
    skipped = json.loads((tmp_path / "cache" / info[0]).read_text())["skipped"]
    assert [os.path.basename(p) for p in skipped] == ["000003.jpg", "000004.jpg"]


def test_amp_on_the_cpu_is_bf16_where_onednn_has_it_else_a_note(tiny, tmp_path, capsys, monkeypatch):
    native = devices.amp_supported(torch.device("cpu"))
    seen, real_step = [], dcgan.train_step

    def step(state, real):
        seen.append((type(state.wrappedD).__name__, state.logits))
        return real_step(state, real)

    monkeypatch.setattr(dcgan, "train_step", step)
    status, out, err = run(tiny("amp", "--amp", "--max-iters", "1"), capsys)
    assert status == 0, err
    note = ("note: --amp needs bf16 kernels (CUDA, or a CPU with native bf16: Intel AMX or AVX-512 "
            "BF16, AMD Zen 4 and later), which cpu lacks; training in float32")
    config = json.loads((tmp_path / "amp" / "config.json").read_text())
    assert (note not in out, config["amp"], seen) == (
        (True, True, [("Autocast", True)]) if native else (False, False, [("Discriminator", False)]))


def test_channels_last_and_compile_train_and_the_step_gets_channels_last_batches(
        tiny, tmp_path, monkeypatch):
    seen, real_step = [], dcgan.train_step

    def step(state, real):
        netD = state.wrappedD
        seen.append((real.is_contiguous(memory_format=torch.channels_last),
                     type(netD).__name__, netD._orig_mod.main[0].weight.is_contiguous(
                         memory_format=torch.channels_last)))
        return real_step(state, real)

    monkeypatch.setattr(dcgan, "train_step", step)
    assert run(tiny("cl", "--channels-last", "--compile", "--max-iters", "2")) == 0
    assert seen == [(True, "OptimizedModule", True)] * 2
    rows = read_metrics(tmp_path / "cl" / "metrics.csv")
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rows)
    assert not torch.empty(8, 3, 32, 32).is_contiguous(memory_format=torch.channels_last)
    # (a plain batch would not pass the check above)
    # the logits path of --amp: D without its Sigmoid, sharing D's weights, and
    # BCEWithLogitsLoss, the same function as Sigmoid + BCELoss up to rounding
    netG, netD, optG, optD = tiny_gan()
    real = torch.randn(8, 3, 32, 32)
    wrapped = devices.Autocast(netD.main[:-1], "cpu")  # prepare_for_training's logits path
    assert {id(p) for p in wrapped.parameters()} == {id(p) for p in netD.parameters()}
    with torch.no_grad():
        probs = netD(real).view(-1)
        logits = wrapped.net(real).view(-1)
        autocast_logits = wrapped(real).view(-1)  # bf16 inside, float32 out
    assert autocast_logits.dtype == torch.float32
    assert torch.allclose(autocast_logits, logits, atol=0.1)
    assert torch.allclose(nn.BCELoss()(probs, torch.ones(8)),
                          nn.BCEWithLogitsLoss()(logits, torch.ones(8)), atol=1e-6)
    assert torch.allclose(logits.sigmoid().mean(), probs.mean(), atol=1e-7)  # D(x) on logits


def test_max_iters_stops_early_and_still_writes_everything(tiny, tmp_path):
    assert run(tiny("short", "--max-iters", "2")) == 0
    outdir = tmp_path / "short"
    assert len(read_metrics(outdir / "metrics.csv")) == 2
    assert sorted(os.listdir(outdir / "progress")) == ["iter_0000000.png", "iter_0000001.png"]
    for name in ("netG.pt", "netD.pt", "loss_curve.png", "progress.gif", "real_vs_fake.png",
                 "training_images.png", "checkpoint.pt", "config.json"):
        assert (outdir / name).exists(), name


def test_128px_trains_a_few_iterations(tiny, tmp_path):
    argv = tiny("big", "--image-size", "128", "--batch-size", "4", "--max-iters", "2")
    assert run(argv) == 0
    with Image.open(tmp_path / "big" / "progress" / "iter_0000001.png") as grid:
        assert grid.size == (8 * 130 + 2, 8 * 130 + 2)
    netG = checkpoints.generator_from_weights(torch.load(tmp_path / "big" / "netG.pt", weights_only=True), "netG.pt", dcgan.Generator)
    assert netG.image_size == 128 and netG(torch.randn(1, 8, 1, 1)).shape == (1, 3, 128, 128)
    assert len(read_metrics(tmp_path / "big" / "metrics.csv")) == 2


def test_cuda_and_cuda0_are_one_device_and_only_cpu_batches_are_pinned():
    """--device cuda named the cache's cuda:0 another place and pinned a CUDA tensor."""
    cpu, cuda, cuda0, cuda1 = (torch.device(d) for d in ("cpu", "cuda", "cuda:0", "cuda:1"))
    assert devices.concrete_device(cuda) == cuda0
    assert data.transfer_kind(cuda0, cuda) == data.transfer_kind(cuda, cuda0) == "none"
    assert data.transfer_kind(cpu, cpu) == "none"
    assert data.transfer_kind(cpu, cuda) == "pin and copy"
    assert data.transfer_kind(cuda0, cuda1) == "copy"
    assert data.transfer_kind(cuda0, cpu) == "copy"


def test_deterministic_changes_no_cpu_number_and_a_resume_keeps_it(tiny, tmp_path, finished_run):
    try:
        assert run(tiny("det", "--deterministic", "--max-iters", "2")) == 0
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        devices.configure_determinism(False, torch.device("cpu"))  # as in a fresh process
        assert not torch.are_deterministic_algorithms_enabled()
        assert run(["--outdir", str(tmp_path / "det"), "--resume", "--max-iters", "6"]) == 0
        assert torch.are_deterministic_algorithms_enabled()  # the checkpoint turned it on
        config = json.loads((tmp_path / "det" / "config.json").read_text())
        assert config["deterministic"] is True
        checkpoint = torch.load(tmp_path / "det" / "checkpoint.pt", weights_only=True)
        assert checkpoint["config"]["deterministic"] is True
        # on the CPU the kernels are repeatable anyway: the numbers of the default run
        assert read_metrics(tmp_path / "det" / "metrics.csv") == read_metrics(finished_run() / "metrics.csv")
    finally:
        devices.configure_determinism(False, torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()


def test_without_a_terminal_one_summary_line_per_epoch(tiny, capsys):
    """Output to a file (here: captured, not a terminal): no progress bar, one line an epoch."""
    status, out, err = run(tiny("out"), capsys)
    assert status == 0, err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 0/2", "epoch 1/2"]
    assert all(" 3 iterations in " in line and line.endswith(" images/s") for line in lines)
    assert "it/s" not in err and "\r" not in err  # no progress bar


def test_amp_compile_channels_last_keep_channels_last_off_cuda(capsys):
    """The fallback for the torch.compile crash of all three together is CUDA's alone."""
    args = cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args(["--amp", "--compile", "--channels-last"])
    resolved = cli.resolve_settings(args, devices.Process(device=torch.device("cpu")))
    assert resolved.channels_last and resolved.compile
    assert "crashed in torch.compile" not in capsys.readouterr().out


def test_fast_takes_the_cores_that_other_processes_leave_free():
    assert [devices.fast_threads(2, busy) for busy in (0, 0.4, 1, 3)] == [2, 2, 1, 1]
    assert devices.fast_threads(8, 2.6) == 5


def test_a_busy_process_beside_is_counted():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert devices.busy_cores() >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_threads_is_used_kept_in_the_configuration_and_by_a_resume(tiny, tmp_path, capsys):
    assert run(tiny("out", "--threads", "1", "--max-iters", "2")) == 0
    assert torch.get_num_threads() == 1
    assert json.loads((tmp_path / "out" / "config.json").read_text())["threads"] == 1
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume", "--max-iters", "3",
                            "--threads", "2"], capsys)
    assert status == 0 and "Resuming with changed settings: --max-iters 2 -> 3, --threads 1 -> 2" in out
    assert torch.get_num_threads() == 2
