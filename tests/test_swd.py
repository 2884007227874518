"""Measuring what the GAN learned: SWD, the EMA generator, evaluation during training."""
import copy
import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import dcgan
from dcgan_beyond import checkpoints, cli, ema, metrics
from helpers import read_metrics, run


def smooth_faces(n, seed, size=32):
    """Images from one distribution: random 4x4 colour fields, smoothly upsampled."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 255
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False).round().to(torch.uint8)


def test_swd_of_a_set_against_itself_is_zero():
    images = smooth_faces(40, 0)
    result = metrics.swd(images, images.clone(), seed=1)
    assert list(result) == [32, 16, "avg"]
    assert all(value == 0 for value in result.values())


def test_same_distribution_scores_near_the_floor_and_noise_far_above():
    reference, other_half = smooth_faces(300, 0), smooth_faces(300, 1)
    floor = metrics.swd(reference, other_half, seed=3)  # two disjoint samples: the floor
    same = metrics.swd(reference, smooth_faces(300, 2), seed=3)
    noise = metrics.swd(reference, torch.randint(0, 256, reference.shape, dtype=torch.uint8,
                                               generator=torch.Generator().manual_seed(2)), seed=3)
    assert 0.6 * floor["avg"] < same["avg"] < 1.6 * floor["avg"]
    assert noise["avg"] > 4 * floor["avg"]


def test_swd_is_repeatable_with_its_seed():
    a, b = smooth_faces(30, 0), smooth_faces(30, 1)
    assert metrics.swd(a, b, seed=5) == metrics.swd(a, b, seed=5)
    assert metrics.swd(a, b, seed=5) != metrics.swd(a, b, seed=6)


def test_swd_needs_sets_of_the_same_shape():
    with pytest.raises(ValueError, match=r"SWD needs two sets of the same shape, not \(3, 3, 32, 32\) and \(4, 3, 32, 32\)"):
        metrics.swd(smooth_faces(3, 0), smooth_faces(4, 0))


def test_laplacian_pyramid_levels_rebuild_the_image():
    images = smooth_faces(4, 0, size=64).float()
    pyramid = metrics.laplacian_pyramid(images, 3)
    assert [level.shape[-1] for level in pyramid] == [64, 32, 16]
    up_kernel = metrics._binomial_kernel(3, 4, images.device)
    rebuilt = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        up = torch.zeros_like(band)
        up[..., ::2, ::2] = rebuilt
        rebuilt = band + metrics._blur(up, up_kernel)
    assert torch.allclose(rebuilt, images, atol=1e-3)


def test_patches_are_the_7x7_neighbourhoods_of_their_positions():
    images = torch.arange(2 * 3 * 16 * 16, dtype=torch.float).view(2, 3, 16, 16)
    positions = (torch.tensor([1, 0]), torch.tensor([3, 12]), torch.tensor([5, 3]))
    patches = metrics._patches(images, positions, 7)
    assert patches.shape == (2, 147)
    assert torch.equal(patches[0].view(3, 7, 7), images[1, :, 0:7, 2:9])
    assert torch.equal(patches[1].view(3, 7, 7), images[0, :, 9:16, 0:7])


def test_ema_with_decay_zero_is_g_and_with_decay_half_the_mean():
    torch.manual_seed(0)
    netG, other = dcgan.Generator(nz=8, ngf=4, image_size=32), dcgan.Generator(nz=8, ngf=4, image_size=32)
    average = dcgan.Generator(nz=8, ngf=4, image_size=32)
    ema.update_ema(average, netG, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(average.state_dict().values(), netG.state_dict().values()))
    start = [p.clone() for p in average.parameters()]
    netG.main[1].running_mean.fill_(3)
    ema.update_ema(average, other, 0.5)
    for averaged, before, current in zip(average.parameters(), start, other.parameters()):
        assert torch.allclose(averaged, (before + current) / 2)
    assert torch.equal(average.main[1].running_mean, other.main[1].running_mean)  # buffers copied


def test_evaluation_and_ema_change_no_training_number(tiny, tmp_path, capsys, finished_run):
    status, out, err = run(tiny("measured", "--eval-every", "3", "--eval-samples", "8",
                                "--ema", "0.9"), capsys)
    assert status == 0, err
    assert read_metrics(finished_run() / "metrics.csv") == read_metrics(tmp_path / "measured" / "metrics.csv")
    assert "SWD x1e3 floor (real vs real, 8 vs 8 images): 32: " in out
    with open(tmp_path / "measured" / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [0, 3, 5]
    assert list(rows[0]) == ["iteration", "swd_32", "swd_16", "swd_avg", "floor_32",
                             "floor_16", "floor_avg"]
    assert all(float(r["swd_avg"]) > 0 and float(r["floor_avg"]) > 0 for r in rows)
    with Image.open(tmp_path / "measured" / "swd.png") as image:
        assert image.size[0] > 500
    checkpoint = torch.load(tmp_path / "measured" / "checkpoint.pt", weights_only=True)
    assert checkpoint["ema"] is not None
    assert not torch.equal(checkpoint["ema"]["main.0.weight"], checkpoint["netG"]["main.0.weight"])
    assert len(checkpoint["evals"]) == 3


def test_evaluate_command_repeats_trainings_last_evaluation(tiny, tmp_path, capsys):
    assert run(tiny("out", "--eval-every", "3", "--eval-samples", "8", "--ema", "0.5")) == 0
    with open(tmp_path / "out" / "eval.csv") as f:
        last = list(csv.DictReader(f))[-1]
    capsys.readouterr()
    status, out, err = run(["evaluate", "--checkpoint", str(tmp_path / "out" / "checkpoint.pt")], capsys)
    assert status == 0, err
    assert f"swd_avg {float(last['swd_avg']):.2f} (floor {float(last['floor_avg']):.2f})" in out


def test_held_out_images_are_the_reference_set(tiny, tmp_path, capsys):
    from helpers import make_images
    held_out = make_images(tmp_path / "held_out" / "img_align_celeba", 6, seed=7)
    status, out, err = run(tiny("out", "--eval-every", "100", "--eval-samples", "50",
                                "--eval-dataroot", str(held_out.parent)), capsys)
    assert status == 0, err
    assert "SWD x1e3 floor (real vs real, 6 vs 6 images)" in out
    with open(tmp_path / "out" / "eval.csv") as f:
        assert [int(r["iteration"]) for r in csv.DictReader(f)] == [0, 5]


def test_tensorboard_logs_losses_grids_and_swd(tiny, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    assert run(tiny("out", "--tensorboard", "--eval-every", "3", "--eval-samples", "8")) == 0
    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    events.Reload()
    assert events.Tags()["images"] == ["fixed_noise"]
    assert "swd_avg" in events.Tags()["scalars"]
    with open(tmp_path / "out" / "eval.csv") as f:
        swd_avg = [float(r["swd_avg"]) for r in csv.DictReader(f)]
    assert [e.step for e in events.Scalars("swd_avg")] == [0, 3, 5]
    assert [e.value for e in events.Scalars("swd_avg")] == pytest.approx(swd_avg, rel=1e-6)
    assert [e.step for e in events.Images("fixed_noise")] == [0, 4, 5]
    # add_scalars writes each curve as a run of its own: the losses of metrics.csv
    rows = read_metrics(tmp_path / "out" / "metrics.csv")
    for run_name, column in (("loss_D", "Loss_D"), ("loss_G", "Loss_G"), ("D_output_D(x)", "D_x")):
        curve = EventAccumulator(str(tmp_path / "out" / "tensorboard" / run_name))
        curve.Reload()
        (tag,) = curve.Tags()["scalars"]
        assert [e.step for e in curve.Scalars(tag)] == list(range(6))
        assert [e.value for e in curve.Scalars(tag)] == pytest.approx([r[column] for r in rows], rel=1e-6)


def test_the_ema_generator_makes_the_grids_the_samples_and_the_swd(tiny, tmp_path, capsys):
    assert run(tiny("ema", "--ema", "0.9", "--max-iters", "3", "--eval-every", "100",
                    "--eval-samples", "8")) == 0
    checkpoint = torch.load(tmp_path / "ema" / "checkpoint.pt", weights_only=True)
    emaG, netG = (checkpoints.generator_from_weights(checkpoint[key], key, dcgan.Generator)
                  for key in ("ema", "netG"))
    fixed = checkpoint["fixed_noise"]
    # the last grid: the EMA generator on the fixed noise, in training mode as the loop runs it
    with Image.open(tmp_path / "ema" / "progress" / "iter_0000002.png") as image:
        grid = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(grid, dcgan.fixed_noise_grid(copy.deepcopy(emaG).train(), fixed))
    assert not torch.equal(grid, dcgan.fixed_noise_grid(copy.deepcopy(netG).train(), fixed))
    # generate: the EMA generator's images for its seed
    status, out, err = run(["generate", "--checkpoint", str(tmp_path / "ema" / "checkpoint.pt"),
                            "--num-samples", "2", "--seed", "3", "--single-files"], capsys)
    assert status == 0, err
    noise = torch.randn(2, 8, 1, 1, generator=torch.Generator().manual_seed(3))
    with Image.open(tmp_path / "ema" / "samples" / "000000.png") as image:
        sample = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    assert torch.equal(sample, metrics.generated_uint8(emaG, noise)[0])
    assert not torch.equal(sample, metrics.generated_uint8(netG, noise)[0])
    # SWD at the end: the EMA generator's (evaluate measures it; G's own differs)
    with open(tmp_path / "ema" / "eval.csv") as f:
        last = list(csv.DictReader(f))[-1]
    evaluator_args = cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args(tiny("x", "--eval-samples", "8"))
    images = dcgan.make_dataset(evaluator_args.dataroot, 32, 3)
    evaluator = metrics.SWDEvaluator(images, None, None, metrics.EvalSettings.of_training(evaluator_args), torch.device("cpu"), log=lambda *a: None)
    assert evaluator.measure(emaG, 2)["swd_avg"] == pytest.approx(float(last["swd_avg"]), rel=1e-6)
    assert evaluator.measure(netG, 2)["swd_avg"] != pytest.approx(float(last["swd_avg"]), rel=1e-6)
