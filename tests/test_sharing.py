"""Sharing on the Hugging Face Hub against a stand-in Hub on 127.0.0.1: the real client
creates the repo, preuploads and commits, then downloads; `generate` from hf:// equals the
local checkpoint's images pixel for pixel, also offline once cached; every bad input is one
line. No test reaches the internet."""
import io
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load

import dcgan
from dcgan_beyond import checkpoints, ema
from fixtures.fake_hub import FakeHub
from helpers import DCGAN, ROOT, interrupt_at, one_error_line, run

TOKEN = "hf_alice_writes"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running stand-in Hub where the token TOKEN is the user alice's; HF_ENDPOINT points
    at it, HF_HOME is empty (no cached file, no stored token)."""
    with FakeHub(tokens={TOKEN: "alice"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def pushed_run(finished_run, hub, capsys, repo="alice/faces", *extra):
    checkpoint = finished_run("--ema", "0.9", "--eval-every", "3") / "checkpoint.pt"
    capsys.readouterr()
    status, out, err = run(["push", "--checkpoint", str(checkpoint), "--repo-id", repo, *extra],
                           capsys)
    assert status == 0, err
    return checkpoint, out


def png_files(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_push_sends_one_commit_that_rebuilds_the_generator_and_samples_as_the_checkpoint(
        hub, finished_run, faces, tmp_path, capsys):
    checkpoint, out = pushed_run(finished_run, hub, capsys)
    model = hub.models["alice/faces"]
    names = ["README.md", "config.json", "loss_curve.png", "model.safetensors", "samples.png"]
    assert [commit[2] for commit in model["commits"][1:]] == [names]  # one commit, every file
    sizes = re.search(r"^Pushing to alice/faces, one commit: (.*)$", out, re.M)[1]
    assert [part.split()[0] for part in sizes.split(", ")] == [
        "config.json", "model.safetensors", "README.md", "samples.png", "loss_curve.png"]
    assert TOKEN not in out
    # config.json is exactly the Generator's arguments; the weights are the EMA generator's
    config = json.loads(model["files"]["config.json"])
    assert config == {"nz": 8, "ngf": 4, "nc": 3, "image_size": 32}
    weights = load(model["files"]["model.safetensors"])
    saved = ema.sampling_weights(torch.load(checkpoint, weights_only=True))
    assert weights.keys() == saved.keys() and all(torch.equal(weights[k], saved[k]) for k in saved)
    netG = dcgan.Generator(**config)
    netG.load_state_dict(weights)
    card = model["files"]["README.md"].decode()
    assert card.startswith("---\nlibrary_name: pytorch\ntags:\n- dcgan\n- gan\n- pytorch\n"
                           "- unconditional-image-generation\npipeline_tag: "
                           "unconditional-image-generation\n")
    assert "license: other" in card and "non-commercial research" in card
    assert "| SWD x1e3 |" in card and "the EMA of G" in card
    assert faces not in card and f"| `dataroot` | {os.path.basename(faces)} |" in card  # no path
    # the card's plain PyTorch lines run as they stand, against the Hub, and give G's images
    code = re.search(r"```python\n(.*?)```", card, re.S)[1]
    images = tmp_path / "images.pt"
    done = subprocess.run([sys.executable, "-c", code + f"\ntorch.save(images, {str(images)!r})"],
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    noise = torch.randn(16, 8, 1, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(torch.load(images), netG.eval()(noise))
    # generate from hf:// equals generate from the checkpoint, pixel for pixel
    argv = ["--num-samples", "5", "--seed", "3", "--single-files"]
    assert run(["generate", "--checkpoint", "hf://alice/faces", "--outdir", str(tmp_path / "hub"), *argv]) == 0
    assert run(["generate", "--checkpoint", str(checkpoint), "--outdir", str(tmp_path / "local"), *argv]) == 0
    assert png_files(tmp_path / "hub") == png_files(tmp_path / "local")
    # once cached it works offline: the stand-in is gone and HF_HUB_OFFLINE is set
    hub.__exit__()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, DCGAN, "generate", "--checkpoint", "hf://alice/faces",
                           "--outdir", str(tmp_path / "offline"), *argv], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert png_files(tmp_path / "offline") == png_files(tmp_path / "local")


def test_push_to_hub_at_the_end_of_a_run_and_not_after_a_stop(hub, tiny, tmp_path, monkeypatch,
                                                              capsys):
    assert run(tiny("done", "--push-to-hub", "alice/run")) == 0
    assert sorted(hub.models["alice/run"]["files"]) == [
        "README.md", "config.json", "loss_curve.png", "model.safetensors", "samples.png"]
    with monkeypatch.context() as patch:
        interrupt_at(patch, 1)
        status, out, err = run(tiny("stopped", "--push-to-hub", "alice/stopped"), capsys)
    assert status == 130 and "alice/stopped" not in hub.models


def test_without_a_token_push_and_push_to_hub_refuse_before_any_work(hub, tiny, tmp_path,
                                                                     monkeypatch, capsys,
                                                                     finished_run):
    checkpoint = finished_run() / "checkpoint.pt"
    capsys.readouterr()
    monkeypatch.delenv("HF_TOKEN")
    line = ("pushing to the Hub needs a token with write access: set HF_TOKEN, or run `hf auth "
            "login` (a token is never a flag)")
    for argv in (["push", "--checkpoint", str(checkpoint), "--repo-id", "alice/faces"],
                 tiny("never", "--push-to-hub", "alice/faces")):
        status, out, err = run(argv, capsys)
        assert status == 2 and one_error_line(err) == line
    assert not (tmp_path / "never").exists() and hub.models == {}


def test_a_repo_of_someone_else_is_refused_in_one_line(hub, finished_run, capsys):
    checkpoint = finished_run() / "checkpoint.pt"
    capsys.readouterr()
    status, out, err = run(["push", "--checkpoint", str(checkpoint), "--repo-id", "bob/faces"], capsys)
    assert status == 2
    assert one_error_line(err) == (
        "the Hub refused to let this token write to bob/faces (403): push to a repo of your own "
        "user or organization, or use a token with write access (set HF_TOKEN, or run `hf auth "
        "login` (a token is never a flag)); nothing was committed")


def test_a_connection_cut_during_the_commit_commits_nothing(hub, finished_run, capsys):
    checkpoint = finished_run() / "checkpoint.pt"
    capsys.readouterr()
    hub.cut_commit = True
    status, out, err = run(["push", "--checkpoint", str(checkpoint), "--repo-id", "alice/faces"], capsys)
    assert status == 2
    message = one_error_line(err)
    assert message.startswith("the connection to the Hub broke (")
    assert message.endswith("); nothing was committed (the files go up in one commit or not at "
                            "all): push again")
    assert hub.models["alice/faces"]["files"] == {}


def test_a_branch_that_does_not_exist_is_named(hub, finished_run, capsys):
    checkpoint = finished_run() / "checkpoint.pt"
    capsys.readouterr()
    status, out, err = run(["push", "--checkpoint", str(checkpoint), "--repo-id", "alice/faces",
                            "--revision", "nope"], capsys)
    assert status == 2
    assert one_error_line(err) == ("--revision nope: alice/faces has no such branch; create it "
                                   "on the Hub first, or drop --revision")


@pytest.mark.parametrize("case, files, path, message", [
    ("no repo", None, "hf://alice/none",
     "no such model repo on the Hub, or a private one this machine has no token for (set "
     "HF_TOKEN, or run `hf auth login` (a token is never a flag))"),
    ("no revision", {}, "hf://alice/faces@nope",
     "the repo has no such revision; give a branch, tag or commit it has, or drop @REVISION"),
    ("no config", {"model.safetensors": b"x"}, "hf://alice/faces",
     "the repo has no config.json: it holds no generator pushed by dcgan.py push (config.json "
     "and model.safetensors)"),
    ("no weights", {"config.json": b"{}"}, "hf://alice/faces",
     "the repo has no model.safetensors: it holds no generator pushed by dcgan.py push "
     "(config.json and model.safetensors)"),
    ("not a generator", "wider", "hf://alice/faces",
     "does not hold a DCGAN generator of this program's architecture"),
    ("not hf://OWNER/NAME", {}, "hf://faces",
     "not a Hub model; write hf://OWNER/NAME, or hf://OWNER/NAME@REVISION for a branch, tag or "
     "commit"),
])
def test_a_hub_checkpoint_that_cannot_be_used_is_one_line(hub, tmp_path, capsys, case, files,
                                                          path, message):
    if files == "wider":  # weights of a generator with ngf 4, a config that says 8
        netG = dcgan.Generator(nz=8, ngf=4, image_size=32)
        buffer = io.BytesIO()
        from safetensors.torch import save
        buffer.write(save({k: v.contiguous() for k, v in netG.state_dict().items()}))
        files = {"config.json": b'{"nz": 8, "ngf": 8, "nc": 3, "image_size": 32}',
                 "model.safetensors": buffer.getvalue()}
    if files is not None:
        hub.models["alice/faces"] = {"owner": "alice", "private": False, "files": files,
                                     "commits": [("0" * 40, "initial", sorted(files))]}
    for command in ("generate", "evaluate"):
        status, out, err = run([command, "--checkpoint", path, "--outdir" if command == "generate"
                                else "--dataroot", str(tmp_path / "x")], capsys)
        assert status == 2
        assert one_error_line(err) == f"--checkpoint {path}: {message}"


def test_a_checkpoints_own_configuration_rebuilds_its_generator(finished_run):
    """No shape inference for a checkpoint: its configuration names the Generator."""
    checkpoint = torch.load(finished_run() / "checkpoint.pt", weights_only=True)
    netG = checkpoints.generator_from_weights(checkpoint["netG"], "x", dcgan.Generator,
                                              checkpoint["config"])
    assert (netG.nz, netG.ngf, netG.nc, netG.image_size) == (8, 4, 3, 32)


def test_private_makes_a_new_repo_private_and_a_bare_netg_pt_pushes_without_a_run(
        hub, finished_run, capsys):
    folder = finished_run()
    capsys.readouterr()
    status, out, err = run(["push", "--checkpoint", str(folder / "netG.pt"), "--repo-id",
                            "alice/bare", "--private", "--commit-message", "first"], capsys)
    assert status == 0, err
    model = hub.models["alice/bare"]
    assert model["private"] and model["commits"][-1][1] == "first"
    assert "Pushed from bare generator weights (netG.pt)" in model["files"]["README.md"].decode()
    assert json.loads(model["files"]["config.json"]) == {"nz": 8, "ngf": 4, "nc": 3, "image_size": 32}
