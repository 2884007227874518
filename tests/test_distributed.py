"""torchrun: two CPU processes with Gloo train one model; outputs are written once."""
import os

import pytest
import torch
import torch.nn as nn
import torch.optim as optim

import dcgan
from dcgan_beyond import cli, devices
from helpers import DCGAN, FIXTURES, fixed_batch, read_metrics, tiny_argv, tiny_models, torchrun



@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, faces):
    """A tiny run by 2 Gloo processes; the probe keeps each rank's final weights."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "probe").mkdir()
    result = torchrun(os.path.join(FIXTURES, "ddp_probe.py"), "train", str(root / "probe"),
                      *tiny_argv(faces, root / "out", root / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_two_processes_train_one_model_and_write_once(two_rank_run):
    root, result = two_rank_run
    ranks = [torch.load(root / "probe" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # identical weights; BatchNorm running statistics are each rank's own between forward
    # passes (DDP broadcasts rank 0's at each one, and rank 0's are saved)
    for net in ("G", "D"):
        for key, value in ranks[0][net].items():
            if "running" not in key and "num_batches" not in key:
                assert torch.equal(value, ranks[1][net][key]), (net, key)
    saved = torch.load(root / "out" / "netG.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in ranks[0]["G"].items())
    # 20 images over 2 ranks of 4 (global batch 8): 10 per rank, 3 batches an epoch
    rows = read_metrics(root / "out" / "metrics.csv")
    assert [r["iteration"] for r in rows] == list(range(6))
    assert result.stdout.count("Loss_D:") == 4  # rank 0 alone prints
    assert result.stdout.count("Starting Training Loop...") == 1
    assert "[0/2][0/3]" in result.stdout
    assert sorted(os.listdir(root / "out" / "progress")) == [
        "iter_0000000.png", "iter_0000004.png", "iter_0000005.png"]
    checkpoint = torch.load(root / "out" / "checkpoint.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2


def test_every_rank_resumes_from_the_same_checkpoint(two_rank_run, faces, tmp_path):
    """A torchrun run stopped after 2 iterations and resumed by torchrun ends with the
    weights of the run done in one go (each rank's random streams are in the checkpoint)."""
    root, _ = two_rank_run
    dcgan_py = DCGAN
    parts = tmp_path / "parts"
    argv = tiny_argv(faces, parts, tmp_path / "cache", "--max-iters", "2")
    assert torchrun(dcgan_py, *argv).returncode == 0
    result = torchrun(dcgan_py, "--outdir", str(parts), "--resume", "--max-iters", "6")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at epoch 0, batch 2 (iteration 2)" in result.stdout
    assert read_metrics(root / "out" / "metrics.csv") == read_metrics(parts / "metrics.csv")
    for name in ("netG.pt", "netD.pt"):
        whole, resumed = (torch.load(d / name, weights_only=True) for d in (root / "out", parts))
        assert all(torch.equal(whole[k], resumed[k]) for k in whole
                   if "running" not in k and "num_batches" not in k)


def test_indivisible_global_batch_is_refused(tiny, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    status = dcgan.main(tiny("ddp", "--batch-size", "7"))
    assert status == 2
    assert capsys.readouterr().err == ("dcgan.py: error: --batch-size 7 cannot be split evenly "
                                       "over 2 processes; use a multiple of 2\n")


def per_half_d_update(bn_per_half):
    """One D update in one process on the batch of 8: as DDP computes it (the mean of the
    two halves' gradients, BatchNorm statistics per half) or on the whole batch."""
    netG, netD = tiny_models()
    optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    real, noise = fixed_batch()
    criterion = nn.BCELoss()
    if not bn_per_half:
        dcgan.d_step(netG, netD, optimizerD, criterion, real, noise)
        return netD.state_dict()
    for half in (slice(0, 4), slice(4, 8)):
        loss = (criterion(netD(real[half]).view(-1), torch.ones(4))
                + criterion(netD(netG(noise[half]).detach()).view(-1), torch.zeros(4)))
        (loss / 2).backward()
    optimizerD.step()
    return netD.state_dict()


def test_two_ranks_make_the_one_process_d_update_up_to_batchnorm_statistics(tmp_path):
    result = torchrun(os.path.join(FIXTURES, "ddp_probe.py"), "d_update", str(tmp_path),
                      "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(tmp_path / "d_update.pt", weights_only=True)
    per_half, whole = per_half_d_update(True), per_half_d_update(False)
    weights = [k for k in ddp if "running" not in k and "num_batches" not in k]
    for key in weights:
        assert torch.allclose(ddp[key], per_half[key], atol=1e-7, rtol=0), key
    # the BatchNorm statistics of a half are not those of the whole batch
    assert not all(torch.allclose(ddp[k], whole[k], atol=1e-7, rtol=0) for k in weights)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SyncBatchNorm needs 2 CUDA GPUs")
def test_sync_bn_makes_the_one_process_d_update_on_two_gpus(tmp_path):
    result = torchrun(os.path.join(FIXTURES, "ddp_probe.py"), "d_update", str(tmp_path),
                      "--sync-bn")
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(tmp_path / "d_update.pt", weights_only=True)
    whole = per_half_d_update(False)
    for key in ddp:
        if "num_batches" not in key:
            assert torch.allclose(ddp[key], whole[key], atol=1e-5), key


def test_sync_bn_on_the_cpu_falls_back_with_a_notice(capsys):
    args = cli.get_args_parser(dcgan.TUTORIAL_INPUTS).parse_args(["--sync-bn"])
    cli.resolve_settings(args, devices.Process(rank=0, world_size=2, device=torch.device("cpu")))
    assert capsys.readouterr().out == ("note: --sync-bn needs CUDA (SyncBatchNorm); BatchNorm "
                                       "statistics stay per process on cpu\n")
