"""The opt-in training improvements: --diffaug, --spectral-norm, --loss hinge, --lr-d and
--lr-g, the EMA warm-up. Each runs, changes what it says, and resumes exactly."""
import json
import math
import os
import signal

import pytest
import torch
import torch.nn as nn
from PIL import Image

import dcgan
from dcgan_beyond import cli, ema, techniques
from helpers import assert_same_run, interrupt_at, one_error_line, read_metrics, run, tiny_models

ALL_FLAGS = ("--diffaug", "--spectral-norm", "--loss", "hinge", "--lr-d", "0.0004",
             "--lr-g", "0.0001", "--ema", "0.9")


@pytest.mark.parametrize("flags", [("--diffaug",), ("--spectral-norm",), ("--loss", "hinge"),
                                   ("--lr-d", "0.0004", "--lr-g", "0.0001"), ("--ema", "0.9"),
                                   ALL_FLAGS],
                         ids=["diffaug", "spectral-norm", "hinge", "ttur", "ema", "all"])
def test_each_flag_trains_and_writes_every_output(tiny, tmp_path, finished_run, flags):
    assert run(tiny("out", *flags, "--eval-every", "3", "--eval-samples", "8")) == 0
    outdir = tmp_path / "out"
    rows = read_metrics(outdir / "metrics.csv")
    assert [r["iteration"] for r in rows] == list(range(6))
    assert all(math.isfinite(v) for r in rows for v in r.values())
    default = read_metrics(finished_run() / "metrics.csv")
    if flags == ("--ema", "0.9"):  # an average beside G: G's own numbers stay the default's
        assert rows == default
    else:
        assert rows != default
    for name in ("training_images.png", "loss_curve.png", "real_vs_fake.png", "swd.png",
                 "progress.gif", "progress/iter_0000005.png"):
        with Image.open(outdir / name) as image:
            image.verify()
    assert (outdir / "eval.csv").read_text().count("\n") == 4  # header, iterations 0, 3, 5
    config = json.loads((outdir / "config.json").read_text())
    saved = torch.load(outdir / "checkpoint.pt", weights_only=False)
    for key, value in cli.settings(cli.get_args_parser(dcgan.TUTORIAL_INPUTS)).items():
        assert key in config and key in saved["config"]
    given = cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args(list(flags))
    for key in ("diffaug", "spectral_norm", "loss", "lr_d", "lr_g", "ema", "ema_rampup"):
        assert config[key] == saved["config"][key] == getattr(given, key)
    lr_d, lr_g = techniques.learning_rates(given)
    assert saved["optimizerD"]["param_groups"][0]["lr"] == lr_d
    assert saved["optimizerG"]["param_groups"][0]["lr"] == lr_g
    # generate reads the checkpoint, spectral-normed D or not (it needs G alone)
    assert run(["generate", "--checkpoint", str(outdir / "checkpoint.pt"),
                "--outdir", str(tmp_path / "samples"), "--num-samples", "4"]) == 0
    with Image.open(tmp_path / "samples" / "samples.png") as grid:
        assert grid.size == (2 * 34 + 2, 2 * 34 + 2)


def test_diffaug_with_every_augmentation_off_gives_the_default_numbers(tiny, tmp_path, finished_run):
    assert techniques.DiffAugment("none").policy == []
    assert run(tiny("none", "--diffaug", "none")) == 0
    assert_same_run(finished_run(), tmp_path / "none")


def test_diffaug_operations_move_cut_and_recolour_and_let_gradients_through():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32) * 2 - 1
    moved = techniques.DiffAugment.translation(x)
    for image, out in zip(x, moved):  # a shift by (dy, dx) of at most 4 pixels; zeros come in
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if torch.equal(out, shifted(image, dy, dx))]
        assert len(found) == 1
    cut = techniques.DiffAugment.cutout(x)
    zeros = (cut == 0).all(dim=1).sum(dim=(1, 2))  # a 16 x 16 square, partly outside at most
    assert ((zeros > 0) & (zeros <= 256)).all() and (zeros == 256).any()
    assert torch.equal(cut[cut != 0], x[cut != 0])
    coloured = techniques.DiffAugment.color(x)
    assert coloured.shape == x.shape and not torch.allclose(coloured, x)
    fake = x.clone().requires_grad_(True)
    techniques.DiffAugment("color,translation,cutout")(fake).sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def shifted(image, dy, dx):
    """image moved down by dy and right by dx, zeros coming in."""
    out = torch.zeros_like(image)
    h, w = image.shape[1:]
    out[:, max(0, -dy):min(h, h - dy), max(0, -dx):min(w, w - dx)] = \
        image[:, max(0, dy):min(h, h + dy), max(0, dx):min(w, w + dx)]
    return out


def test_hinge_and_bce_give_the_known_values_on_hand_made_logits():
    logits = torch.tensor([2.0, -0.5, 0.3, 0.0])
    real, fake = torch.ones(4), torch.zeros(4)
    hinge = techniques.HingeLoss()
    # real: relu(1 - D(x)) = 0, 1.5, 0.7, 1; fake: relu(1 + D(G(z))) = 3, 0.5, 1.3, 1
    assert hinge(logits, real).item() == pytest.approx((0 + 1.5 + 0.7 + 1) / 4)
    assert hinge(logits, fake).item() == pytest.approx((3 + 0.5 + 1.3 + 1) / 4)
    assert hinge.generator_loss(logits).item() == pytest.approx(-(2 - 0.5 + 0.3 + 0) / 4)
    # BCE on probabilities (the tutorial's) and on logits: -log sigmoid(x), -log(1 - sigmoid(x))
    expected_real = sum(math.log1p(math.exp(-v)) for v in logits.tolist()) / 4
    expected_fake = sum(math.log1p(math.exp(v)) for v in logits.tolist()) / 4
    assert nn.BCELoss()(logits.sigmoid(), real).item() == pytest.approx(expected_real, rel=1e-6)
    assert nn.BCEWithLogitsLoss()(logits, fake).item() == pytest.approx(expected_fake, rel=1e-6)
    args = cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args(["--loss", "hinge"])
    assert techniques.d_returns_logits(args)


def test_spectral_norm_keeps_ds_largest_singular_value_near_1(tiny, tmp_path):
    assert run(tiny("sn", "--spectral-norm", "--num-epochs", "4")) == 0
    netD = dcgan.Discriminator(ndf=4, image_size=32)
    techniques.spectral_norm(netD)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in netD.modules())
    netD.load_state_dict(torch.load(tmp_path / "sn" / "netD.pt", weights_only=True))
    convs = [m for m in netD.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    netD.eval()  # the weight as D used it at the last step, with no further power iteration
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item()
        raw = torch.linalg.matrix_norm(conv.parametrizations.weight.original.flatten(1), ord=2).item()
        assert sigma == pytest.approx(1, abs=0.05) and raw != pytest.approx(1, abs=0.05)


def test_ema_warm_up_is_g_at_step_0_and_approaches_the_decay():
    assert ema.ema_decay(0.999, 0.05, 0) == 0
    assert ema.ema_decay(0.999, 0.05, 10) == pytest.approx(0.5 ** 2)  # half-life 0.5 steps
    decays = [ema.ema_decay(0.999, 0.05, t) for t in (1, 10, 100, 1000, 10 ** 4, 10 ** 5)]
    assert decays == sorted(decays) and decays[-1] == 0.999
    assert ema.ema_decay(0.999, 0, 0) == 0.999  # --ema-rampup 0: no warm-up
    netG, _ = tiny_models()
    average = tiny_models(seed=1)[0]
    ema.update_ema(average, netG, ema.ema_decay(0.999, 0.05, 0))
    assert all(torch.equal(a, b) for a, b in zip(average.state_dict().values(), netG.state_dict().values()))


def test_interrupted_run_with_every_flag_resumes_exactly(tiny, tmp_path, monkeypatch):
    assert run(tiny("whole", *ALL_FLAGS)) == 0
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        assert run(tiny("parts", *ALL_FLAGS)) == 128 + signal.SIGINT
    assert run(["--outdir", str(tmp_path / "parts"), "--resume"]) == 0
    assert_same_run(tmp_path / "whole", tmp_path / "parts")


def test_resume_refuses_to_switch_spectral_norm_and_a_bad_policy_is_named(tiny, tmp_path, capsys):
    assert run(tiny("out", "--max-iters", "2")) == 0
    capsys.readouterr()
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume", "--spectral-norm"], capsys)
    assert status == 2
    assert one_error_line(err) == (
        f"--resume {tmp_path / 'out' / 'checkpoint.pt'}: the run was trained with other "
        "settings, which cannot change on resume: --spectral-norm False -> True; drop "
        "these flags, or start a new run in another --outdir")
    status, out, err = run(tiny("bad", "--diffaug", "colour"), capsys)
    assert status == 2
    assert one_error_line(err) == (
        "argument --diffaug: 'colour' is not a DiffAugment policy: give a comma-separated "
        "subset of color,translation,cutout, or none (see dcgan.py --help)")
    assert not os.path.exists(tmp_path / "bad")
