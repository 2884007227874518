"""Bad input: one line that names the problem and the fix, exit status 2, no traceback,
and nothing earlier destroyed."""
import json
import os
import time

import pytest
import torch

import dcgan
from dcgan_beyond import cli
from helpers import DCGAN, make_images, one_error_line, run, tiny_argv, torchrun

CELEBA_HINT = "get CelebA's img_align_celeba.zip from the official site"


def test_missing_dataroot(tiny, tmp_path, capsys):
    status, out, err = run(tiny(dataroot=str(tmp_path / "nowhere")), capsys)
    assert status == 2
    message = one_error_line(err)
    assert message.startswith(f"--dataroot {tmp_path / 'nowhere'}: no such folder; {CELEBA_HINT}")
    assert message.endswith(f"so that {tmp_path / 'nowhere' / 'img_align_celeba' / '000001.jpg'} exists")


def test_dataroot_that_is_a_file(tiny, tmp_path, capsys):
    (tmp_path / "file.jpg").write_bytes(b"x")
    status, out, err = run(tiny(dataroot=str(tmp_path / "file.jpg")), capsys)
    assert status == 2
    assert one_error_line(err) == (f"--dataroot {tmp_path / 'file.jpg'}: is a file, not a folder; "
                                   "give the folder that holds img_align_celeba/ (or the images themselves)")


@pytest.mark.parametrize("layout", ["empty", "empty-subfolder", "text-files"])
def test_dataroot_without_images(tiny, tmp_path, capsys, layout):
    root = tmp_path / "data"
    root.mkdir()
    if layout == "empty-subfolder":
        (root / "img_align_celeba").mkdir()
    if layout == "text-files":
        (root / "list_attr_celeba.txt").write_text("x")
    status, out, err = run(tiny(dataroot=str(root)), capsys)
    assert status == 2
    message = one_error_line(err)
    assert message.startswith(f"--dataroot {root}: holds no images (.jpg, .jpeg, .png, .ppm, ...); "
                              f"expected {root / 'img_align_celeba' / '*.jpg'} or a folder of images")


@pytest.mark.parametrize("flag, value, expected", [
    ("--image-size", "48", "argument --image-size: 48 is not a size the DCGAN layers can make: "
                           "use a power of two of at least 32 (32, 64, 128, 256, ...)"),
    ("--image-size", "16", "argument --image-size: 16 is not a size the DCGAN layers can make"),
    ("--batch-size", "0", "argument --batch-size: must be a whole number of at least 1, not 0"),
    ("--lr", "-1", "argument --lr: must be a positive number, not -1"),
    ("--beta1", "1.5", "argument --beta1: must be at least 0 and below 1, not 1.5"),
    ("--nc", "2", "argument --nc: invalid choice: 2 (choose from 1, 3)"),
    ("--workers", "two", "argument --workers: invalid non_negative_int value: 'two'"),
    ("--ema", "1", "argument --ema: must be at least 0 and below 1, not 1"),
])
def test_bad_flag_values(tiny, capsys, flag, value, expected):
    status, out, err = run(tiny("out", flag, value), capsys)
    assert status == 2
    message = one_error_line(err)
    assert message.startswith(expected) and message.endswith("(see dcgan.py --help)")


def test_unknown_flag_and_abbreviations_are_refused(tiny, capsys):
    status, out, err = run(tiny("out", "--num-epoch", "3"), capsys)
    assert status == 2
    assert one_error_line(err) == "unrecognized arguments: --num-epoch 3 (see dcgan.py --help)"


def test_unavailable_device(tiny, capsys):
    status, out, err = run(tiny("out", "--device", "cuda:7"), capsys)
    assert status == 2
    assert "--device cuda:7: this machine has no such device" in one_error_line(err)
    status, out, err = run(tiny("out", "--device", "gpu!"), capsys)
    assert one_error_line(err) == "--device gpu!: not a device name; use auto, cpu, cuda, cuda:N or mps"


def test_unwritable_outdir_is_reported_before_training(tiny, tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    argv = tiny("out") + ["--outdir", str(tmp_path / "blocker" / "out")]
    status, out, err = run(argv, capsys)
    assert status == 2
    assert one_error_line(err).startswith(f"--outdir {tmp_path / 'blocker' / 'out'}: cannot write there")
    assert "Starting Training Loop" not in out


def test_a_new_run_never_overwrites_an_earlier_runs_checkpoint(tiny, tmp_path, capsys):
    assert run(tiny("out", "--max-iters", "1")) == 0
    before = (tmp_path / "out" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    status, out, err = run(tiny("out", "--max-iters", "2"), capsys)
    assert status == 2
    assert one_error_line(err) == (
        f"--outdir {tmp_path / 'out'}: holds the checkpoint of an earlier run; continue it "
        "with --resume, or start afresh in another --outdir (or after deleting "
        f"{tmp_path / 'out' / 'checkpoint.pt'})")
    assert (tmp_path / "out" / "checkpoint.pt").read_bytes() == before


def test_tensorboard_without_the_package(tiny, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "torch.utils.tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    status, out, err = run(tiny("out", "--tensorboard"), capsys)
    assert status == 2
    assert one_error_line(err) == ("--tensorboard needs the tensorboard package: pip install "
                                   "tensorboard (or drop --tensorboard)")


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        dcgan.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in cli.get_args_parser(dcgan.TUTORIAL_INPUTS)._actions:
        assert action.help, action.dest
    for flag in ("--dataroot", "--workers", "--batch-size", "--image-size", "--nc", "--nz",
                 "--ngf", "--ndf", "--num-epochs", "--lr", "--beta1", "--ngpu", "--seed",
                 "--outdir", "--device", "--max-iters", "--log-every", "--sample-every",
                 "--resume", "--checkpoint-every", "torchrun"):
        assert flag in text


def test_each_flag_that_needs_another_says_so_in_one_note(tiny, tmp_path, capsys):
    idle = ["--eval-metrics", "fid", "--eval-samples", "5", "--eval-dataroot", str(tmp_path),
            "--fid-weights", str(tmp_path / "none.pth"), "--ema-rampup", "0.1",
            "--allow-changed-data", "--no-cache", "--max-iters", "1"]
    status, out, err = run(tiny("out", *idle), capsys)
    assert status == 0, err
    assert [line for line in out.splitlines() if line.startswith("note: --")] == [
        "note: --eval-metrics has no effect without --eval-every N (it says what --eval-every measures)",
        "note: --eval-samples has no effect without --eval-every N",
        "note: --eval-dataroot has no effect without --eval-every N",
        "note: --fid-weights has no effect without FID or KID (--eval-every N --eval-metrics fid or kid)",
        "note: --ema-rampup has no effect without --ema DECAY",
        "note: --allow-changed-data has no effect without --resume",
        "note: --cache-dir has no effect without the decode-once cache (dropped by --no-cache) or FID and KID"]
    assert not (tmp_path / "out" / "eval.csv").exists()  # nothing measured, as the note says


def test_flags_with_what_they_need_give_no_note(tiny, capsys):
    status, out, err = run(tiny("out", "--ema", "0.9", "--ema-rampup", "0.1", "--max-iters", "1"), capsys)
    assert status == 0, err
    assert "note: --" not in out


def test_a_checkpoint_without_its_fields_and_a_text_file(tiny, tmp_path, capsys):
    assert run(tiny("out", "--max-iters", "1")) == 0
    path = tmp_path / "out" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    for key in ("ema", "config", "rng"):
        del checkpoint[key]
    torch.save(checkpoint, path)
    status, out, err = run(["--resume", str(path)], capsys)
    assert status == 2 and one_error_line(err) == (
        f"--resume {path}: a damaged checkpoint: it lacks config, ema, rng; use an intact copy")
    text = tmp_path / "five.pt"
    text.write_text("hello")
    status, out, err = run(["generate", "--checkpoint", str(text)], capsys)
    assert status == 2 and one_error_line(err).startswith(
        f"--checkpoint {text}: cannot be read: truncated or corrupt (")


def test_generate_into_a_folder_it_cannot_write(tiny, tmp_path, capsys):
    assert run(tiny("out", "--max-iters", "1")) == 0
    status, out, err = run(["generate", "--checkpoint", str(tmp_path / "out" / "netG.pt"),
                            "--outdir", "/proc"], capsys)
    assert status == 2
    assert one_error_line(err).startswith("--outdir /proc: cannot write there (")


@pytest.mark.parametrize("value", [str(2 ** 64), str(2 ** 63), "-1"])
def test_a_seed_out_of_range_is_refused_before_anything_is_made(tiny, tmp_path, capsys, value):
    status, out, err = run(tiny("out", "--seed", value), capsys)
    assert status == 2
    assert one_error_line(err) == (f"argument --seed: must be a whole number from 0 to "
                                   f"{2 ** 63 - 1}, not {value} (see dcgan.py --help)")
    assert not (tmp_path / "out").exists()


def test_swd_on_one_image_is_refused(tiny, tmp_path, capsys):
    root = make_images(tmp_path / "one" / "img_align_celeba", 1)
    status, out, err = run(tiny("out", "--eval-every", "1", dataroot=str(root.parent)), capsys)
    assert status == 2
    assert one_error_line(err) == (f"--eval-every: SWD needs at least 2 training images (a set "
                                   f"to compare with and a set for the floor), and "
                                   f"{root.parent} has 1; add images, or give --eval-dataroot")
    assert not (tmp_path / "out").exists()
    assert run(tiny("plain", "--max-iters", "1", dataroot=str(root.parent))) == 0
    status, out, err = run(["evaluate", "--checkpoint", str(tmp_path / "plain" / "checkpoint.pt")], capsys)
    assert status == 2 and one_error_line(err).startswith("--eval-every: SWD needs at least 2")


def test_the_cheap_checks_come_before_any_download(tiny, tmp_path, capsys, monkeypatch):
    """A run that would be refused for its size is refused before CelebA is fetched."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # were it tried: no network
    status, out, err = run(tiny("out", "--download", "--image-size", "4096",
                                dataroot=str(tmp_path / "celeba")), capsys)
    assert status == 2
    assert one_error_line(err).startswith("--image-size 4096: one training step would need about ")
    assert not (tmp_path / "celeba").exists() and not (tmp_path / "out").exists()


def test_a_huge_image_size_is_refused_before_anything_is_built(tiny, tmp_path, capsys):
    start_time = time.time()
    status, out, err = run(tiny("out", "--image-size", "4096"), capsys)
    assert status == 2 and time.time() - start_time < 30
    message = one_error_line(err)
    assert message.startswith("--image-size 4096: one training step would need about ")
    assert message.endswith("; use a smaller --image-size, --batch-size, --ngf or --ndf")
    # the same at the tutorial's widths (and the tiny run's nz 8): 23 billion weights
    status, out, err = run(tiny("out", "--image-size", "4096", "--ngf", "64", "--ndf", "64"), capsys)
    assert "(22,911 million weights with their gradients and Adam's moments" in one_error_line(err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_divergence_before_any_checkpoint_says_so(tiny, tmp_path, capsys, monkeypatch):
    real_step = dcgan.train_step
    monkeypatch.setattr(dcgan, "train_step", lambda *a, **k: real_step(*a, **k) * float("nan"))
    status, out, err = run(tiny("out"), capsys)
    assert status == 2
    assert one_error_line(err) == ("training diverged at iteration 0: a loss or D output became "
                                   "NaN or infinite; no checkpoint was written before it; start "
                                   "again with a lower --lr")


def test_too_many_workers_are_capped_with_a_note(tiny, tmp_path, capsys):
    usable = len(os.sched_getaffinity(0))
    status, out, err = run(tiny("out", "--workers", "1000", "--max-iters", "1", "--no-cache"), capsys)
    assert status == 0, err
    assert (f"note: --workers 1000 is more than the {usable} CPU cores here can use; "
            f"decoding with {usable}") in out
    assert json.loads((tmp_path / "out" / "config.json").read_text())["workers"] == usable


def test_under_torchrun_a_bad_flag_is_said_once(faces, tmp_path):
    result = torchrun(DCGAN, *tiny_argv(faces, tmp_path / "out", tmp_path / "cache",
                                        "--batch-size", "7"))
    assert result.returncode != 0
    line = ("dcgan.py: error: --batch-size 7 cannot be split evenly over 2 processes; use a "
            "multiple of 2")
    # said once by rank 0, then named again as the root cause in torchrun's closing report
    assert result.stderr.count(line) == 2, result.stderr[-2000:]
    report = result.stderr[result.stderr.rindex("Root Cause"):]
    assert f"traceback : {line}" in report and "rank      : 0" in report
