"""The health monitor: each sign of a lost run fires on statistics (or a grid) that show
it, stays quiet on a healthy run's, is said once, recorded, and can stop the run."""
import csv

import torch
import torchvision.utils as vutils

import dcgan
from dcgan_beyond import cli, health, stopping
from helpers import run


def monitor(**flags):
    args = cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args([f"--{k.replace('_', '-')}={v}" for k, v in flags.items()])
    real = torch.randint(0, 256, (64, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    return health.HealthMonitor(args, real.to(torch.uint8))


def rows(loss_d, loss_g, d_g_z=0.3):
    return [[0, i, d, g, 0.7, d_g_z, d_g_z, 0.0] for i, (d, g) in enumerate(zip(loss_d, loss_g))]


def healthy_losses(n, seed=0):
    """Losses as a healthy run has them: noisy, with a few near-zero Loss_D among them."""
    g = torch.Generator().manual_seed(seed)
    loss_d = (0.2 + torch.rand(n, generator=g)).tolist()
    loss_g = (1 + 4 * torch.rand(n, generator=g)).tolist()
    for k in range(0, n, 40):
        loss_d[k] = 0.003
    return loss_d, loss_g


def test_d_has_won_fires_once_on_a_sustained_stretch_and_not_on_a_healthy_run():
    quiet = monitor()
    assert quiet.observe_rows(rows(*healthy_losses(300))) == []
    loud = monitor(lr_d=0.0004)
    loss_d = [0.5] * 20 + [0.0004] * 60
    events = loud.observe_rows(rows(loss_d, [20.0 + k % 3 for k in range(80)], d_g_z=0.0))
    assert [(e["iteration"], e["signal"]) for e in events] == [(64, "d_won")]  # 45 of the last 50
    assert events[0]["message"] == (
        "warning: iteration 64: D has won: Loss_D was below 0.001 in 45 of the last 50 iterations "
        "(D(G(z)) 0.0000), so G gets no gradient it can learn from. What usually helps: a "
        "slower D (--lr-d 0.0002), --loss hinge --ema 0.999, or --diffaug; see "
        "docs/when-a-run-goes-wrong.md")
    assert loud.observe_rows(rows(loss_d, [20.0] * 80, d_g_z=0.0)[:60]) == []  # said once


def test_no_learning_fires_on_flat_losses_and_not_on_noisy_ones():
    assert monitor().observe_rows(rows(*healthy_losses(200, seed=1))) == []
    events = monitor(lr=1e9).observe_rows(rows([100.0] * 60, [0.0] * 60, d_g_z=1.0))
    assert [(e["iteration"], e["signal"]) for e in events] == [(49, "no_learning")]
    assert events[0]["message"].startswith(
        "warning: iteration 49: the run has stopped learning: over the last 50 iterations "
        "Loss_D stayed at 100.0000 and Loss_G at 0.0000 (they moved by less than 0.001), as "
        "when the learning rate is far too high (--lr 1e+09)")


def test_g_has_collapsed_fires_on_near_copies_and_not_on_varied_images():
    check = monitor()
    varied = torch.randint(0, 256, (64, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    grid = lambda images: dcgan.to_uint8(vutils.make_grid(images.float(), padding=2, normalize=True))
    assert check.observe_grid(10, grid(varied)) == []
    one = varied[:1].float().expand(64, -1, -1, -1)
    copies = one + torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert check.observe_grid(20, grid(copies)) == []  # one grid alone is not a collapse
    assert check.observe_grid(30, grid(varied)) == []
    assert check.observe_grid(40, grid(copies)) == []
    events = check.observe_grid(50, grid(copies))
    assert [(e["iteration"], e["signal"]) for e in events] == [(50, "g_collapsed")]
    assert "G has collapsed: its 64 fixed-noise images are near copies" in events[0]["message"]
    # image 9 of the grid is the one at row 1, column 1 (padding 2, 64 px)
    g = grid(varied)
    assert torch.equal(health.grid_images(g, 64)[9], g[:, 68:132, 68:132])


def read_health(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_lr_1e9_warns_once_and_records_it(tiny, tmp_path, capsys):
    status, out, err = run(tiny("lr", "--lr", "1e9", "--num-epochs", "25"), capsys)
    assert status == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning: iteration")]
    assert len(warnings) == 1 and "the run has stopped learning" in warnings[0]
    events = read_health(tmp_path / "lr" / "health.csv")
    assert [(e["iteration"], e["signal"]) for e in events] == [(warnings[0].split()[2][:-1], "no_learning")]
    checkpoint = torch.load(tmp_path / "lr" / "checkpoint.pt", weights_only=True)
    assert [e["message"] for e in checkpoint["health"]] == warnings


def test_on_failure_stop_exits_3_with_a_checkpoint_that_resumes(tiny, tmp_path, capsys):
    status, out, err = run(tiny("stop", "--lr", "1e9", "--num-epochs", "25", "--on-failure", "stop"), capsys)
    assert status == stopping.FAILURE_EXIT == 3
    stopped_at = int(out.split("Stopped after iteration ")[1].split(":")[0])
    warned_at = int(out.split("warning: iteration ")[1].split(":")[0])
    # the losses reach the host every --log-every (here 2) batches: the stop comes at that flush
    assert warned_at <= stopped_at <= warned_at + 2
    assert (f"Stopped after iteration {stopped_at}: the run is failing (--on-failure stop: warned "
            f"at iteration {warned_at}, seen when its statistics reached the host, every "
            "--log-every batches); checkpoint") in out
    checkpoint = torch.load(tmp_path / "stop" / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == stopped_at + 1 < 75  # the next iteration to train
    assert len(checkpoint["health"]) == 1
    status, out, err = run(tiny("stop", "--resume", "--num-epochs", "25", "--on-failure", "warn"), capsys)
    assert status == 0
    assert "warning: iteration" not in out  # the resumed run keeps its history: said once
    assert len(read_health(tmp_path / "stop" / "health.csv")) == 1
    assert torch.load(tmp_path / "stop" / "checkpoint.pt", weights_only=True)["iteration"] == 75


def test_a_healthy_tiny_run_writes_an_empty_health_csv(finished_run):
    assert (finished_run() / "health.csv").read_text() == "iteration,signal,value,message\n"


def test_d_has_won_in_a_real_run_warns_and_stops(tiny, tmp_path, capsys):
    """A D that learns 10^5 times faster than G wins within a few dozen iterations."""
    status, out, err = run(tiny("dwon", "--lr-d", "0.01", "--lr-g", "0.0000001", "--num-epochs", "60",
                                "--log-every", "1", "--on-failure", "stop"), capsys)
    assert status == 3, err
    warnings = [line for line in out.splitlines() if line.startswith("warning: iteration ")]
    assert len(warnings) == 1 and ": D has won: Loss_D was below 0.001 in " in warnings[0]
    assert "a slower D (--lr-d 0.005)" in warnings[0]  # half of D's own rate
    assert [e["signal"] for e in read_health(tmp_path / "dwon" / "health.csv")] == ["d_won"]


def test_g_has_collapsed_in_a_real_run_when_its_grids_are_copies(tiny, tmp_path, capsys, monkeypatch):
    """G's fixed-noise images made from one noise vector 64 times are 64 copies: the monitor,
    wired to the loop's grids, says so after two grids running."""
    real_grid = dcgan.fixed_noise_grid
    monkeypatch.setattr(dcgan, "fixed_noise_grid",
                        lambda netG, noise: real_grid(netG, noise[:1].expand_as(noise)))
    status, out, err = run(tiny("collapse", "--sample-every", "1", "--max-iters", "4"), capsys)
    assert status == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning: iteration ")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: iteration 1: G has collapsed: its 64 fixed-noise images "
                                  "are near copies of each other (their mean distance is 0.00 of a real batch's")
    assert [e["signal"] for e in read_health(tmp_path / "collapse" / "health.csv")] == ["g_collapsed"]
