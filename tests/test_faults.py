"""Promises kept under real faults: a second process, real signals, a real full disk
(RLIMIT_FSIZE), real damage to the cache and the checkpoint, real non-UTF-8 names."""
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import dcgan
from dcgan_beyond import data, devices, files
from conftest import make_images, read_metrics, run, tiny_argv
from test_cli_errors import one_error_line
from test_distributed import HERE, torchrun
from test_resume import assert_same_run, interrupt_at

DCGAN = dcgan.__file__


def start(argv, limit_bytes=None):
    """dcgan.py in a process of its own (a file size limit makes a full disk)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(DCGAN))
    return subprocess.Popen([sys.executable, DCGAN, *map(str, argv)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit if limit_bytes else None)


def wait_for(condition, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def long_run(tiny, name="out"):
    """A run that trains until stopped (log lines and checkpoints every iteration)."""
    return tiny(name, "--num-epochs", "500", "--log-every", "1", "--checkpoint-every", "1")


def rows(path):
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


# 1: one run per outdir ------------------------------------------------------------------

def test_a_second_run_in_the_same_outdir_stops_at_once_and_names_the_first(tiny, tmp_path, capsys):
    first = start(long_run(tiny))
    metrics = tmp_path / "out" / "metrics.csv"
    try:
        wait_for(lambda: rows(metrics) >= 3)
        holder = f"PID {first.pid} on {socket.gethostname()}, since "
        for argv in (tiny("out", "--max-iters", "2"),  # a new run
                     ["--resume", str(tmp_path / "out" / "checkpoint.pt")],  # resuming it
                     ["--outdir", str(tmp_path / "out"), "--resume"]):
            status, out, err = run(argv, capsys)
            assert status == 2
            message = one_error_line(err)
            assert message.startswith(f"--outdir {tmp_path / 'out'}: another run is writing "
                                      f"there ({holder}")
            assert message.endswith("); wait for it to end or stop it, or choose another --outdir")
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM
    done = read_metrics(metrics)
    assert [r["iteration"] for r in done] == list(range(len(done)))  # one run's rows, in order


def test_a_lock_left_by_a_killed_run_blocks_nobody(tiny, tmp_path):
    first = start(long_run(tiny))
    wait_for(lambda: rows(tmp_path / "out" / "metrics.csv") >= 3)
    first.kill()  # kill -9: no clean-up at all
    first.communicate()
    assert (tmp_path / "out" / "run.lock").exists()
    assert run(["--outdir", str(tmp_path / "out"), "--resume", "--max-iters", "8",
                "--num-epochs", "500"]) == 0


# 2, 5, 7: signals ------------------------------------------------------------------------

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
    result = torchrun(os.path.join(HERE, "ddp_probe.py"), "signal", "4", *argv)
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
    status, out, err = run(["--outdir", str(tmp_path / "out"), "--resume"], capsys)
    assert status == 128 + signal.SIGTERM
    assert err.strip() == ("dcgan.py: stopped at once by a second SIGTERM; the last checkpoint "
                           "is as it was")
    assert (tmp_path / "out" / "checkpoint.pt").read_bytes() == before


# 3, 4: resume knows its data; nothing is written before the inputs are checked ------------

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


# 6: a full disk ---------------------------------------------------------------------------

def test_a_full_disk_while_checkpointing_is_one_line_and_the_last_checkpoint_stays(tiny, tmp_path):
    assert run(tiny("out", "--max-iters", "2")) == 0
    path = tmp_path / "out" / "checkpoint.pt"
    before = path.read_bytes()
    process = start(["--outdir", tmp_path / "out", "--resume", "--checkpoint-every", "1"],
                    limit_bytes=len(before) // 2)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    assert one_error_line(err) == (f"cannot write {path} (File too large); the previous "
                                   "checkpoint is intact; free some space and resume")
    assert path.read_bytes() == before
    assert [f for f in os.listdir(tmp_path / "out") if f.endswith(".tmp")] == []


def test_a_full_disk_while_building_the_cache_gives_the_reason(tiny, tmp_path):
    process = start(tiny("out"), limit_bytes=20_000)  # config.json fits; the cache does not
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    assert one_error_line(err) == (f"--cache-dir {tmp_path / 'cache'}: cannot write the image "
                                   "cache (File too large); give a writable --cache-dir, or --no-cache")
    assert [f for f in os.listdir(tmp_path / "cache") if f.endswith((".tmp", ".npy"))] == []


# 8: a cache that heals ----------------------------------------------------------------------

def damage(path, how):
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "text":
        path.write_text("not an array\n")
    elif how == "no-sidecar":
        os.remove(f"{path}.json")
    elif how == "bad-sidecar":
        with open(f"{path}.json", "w") as f:
            f.write("{ broken")
    elif how == "wrong-shape":
        np.save(path, np.zeros((20, 3, 16, 16), np.uint8))
    elif how == "wrong-rows":
        np.save(path, np.zeros((19, 3, 32, 32), np.uint8))
    elif how == "wrong-dtype":
        np.save(path, np.zeros((20, 3, 32, 32), np.float32))


@pytest.mark.parametrize("how", ["truncated", "text", "no-sidecar", "bad-sidecar", "wrong-shape",
                                 "wrong-rows", "wrong-dtype"])
def test_a_damaged_cache_is_noticed_and_decoded_again(faces, tmp_path, capsys, how):
    images = dcgan.make_dataset(faces, 32, 3)
    good = data.load_pixel_cache(images, 32, 3, str(tmp_path), workers=0).clone()
    (path,) = tmp_path.glob("faces-*.npy")
    damage(path, how)
    capsys.readouterr()
    pixels = data.load_pixel_cache(images, 32, 3, str(tmp_path), workers=0)
    err = capsys.readouterr().err
    assert err.startswith(f"warning: the image cache {path} is damaged (")
    assert err.endswith("); decoding the images again\n") and err.count("\n") == 1
    assert torch.equal(pixels, good)
    capsys.readouterr()
    assert torch.equal(data.load_pixel_cache(images, 32, 3, str(tmp_path), workers=0), good)
    assert capsys.readouterr().err == ""  # healed


def test_the_cache_is_mapped_not_loaded(faces, tmp_path):
    images = dcgan.make_dataset(faces, 32, 3)
    pixels = data.load_pixel_cache(images, 32, 3, str(tmp_path), workers=0)
    (path,) = tmp_path.glob("faces-*.npy")
    with open("/proc/self/maps") as f:
        assert str(path) in f.read()  # the file's pages are the page cache's, shared
    assert torch.equal(data.normalize_pixels(pixels), torch.stack([images[i] for i in range(20)]))


def test_a_cache_folder_without_room_is_refused_before_decoding(tiny, small_filesystem, capsys):
    small = small_filesystem
    status, out, err = run(tiny("out", "--image-size", "256", "--cache-dir", str(small)), capsys)
    assert status == 2
    assert one_error_line(err) == (f"--cache-dir {small}: the image cache needs 3.8 MiB and "
                                   "1.0 MiB is free there; give a --cache-dir with room, or --no-cache")
    assert [f for f in os.listdir(small) if not f.endswith(".lock")] == []  # nothing decoded


def test_a_killed_build_leaves_no_cache_that_looks_complete(tmp_path):
    root = make_images(tmp_path / "many" / "img_align_celeba", 1500, size=(178, 218))
    code = ("import sys, dcgan; from dcgan_beyond import data; images = dcgan.make_dataset(sys.argv[1], 128, 3); "
            "data.load_pixel_cache(images, 128, 3, sys.argv[2], workers=0)")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(DCGAN))
    builder = subprocess.Popen([sys.executable, "-c", code, str(root.parent), str(tmp_path / "cache")],
                               env=env, stderr=subprocess.DEVNULL)
    wait_for(lambda: list((tmp_path / "cache").glob("*.tmp")) if (tmp_path / "cache").exists() else [])
    builder.kill()
    builder.wait()
    assert list((tmp_path / "cache").glob("*.npy")) == []
    assert len(list((tmp_path / "cache").glob("*.tmp"))) == 1
    images = dcgan.make_dataset(str(root.parent), 128, 3)
    pixels = data.load_pixel_cache(images, 128, 3, str(tmp_path / "cache"), workers=2)
    assert pixels.shape == (1500, 3, 128, 128)
    assert torch.equal(data.normalize_pixels(pixels[1499]), images[1499])
    assert list((tmp_path / "cache").glob("*.tmp")) == []


# 9, 11, 12, 13, 15, 17, 18: one line each -----------------------------------------------------

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


# 10: names that are not UTF-8 ------------------------------------------------------------------

def test_file_names_that_are_not_utf8_train_with_the_cache(tmp_path, tiny, capsys):
    root = make_images(tmp_path / "odd" / "img_align_celeba", 6)
    os.rename(os.path.join(bytes(root), b"000001.jpg"), os.path.join(bytes(root), b"caf\xe9.jpg"))
    status, out, err = run(tiny("out", "--max-iters", "1", dataroot=str(root.parent)), capsys)
    assert status == 0, err
    assert "Decoded 6 images once" in out


# 14: torchrun ------------------------------------------------------------------------------------

def test_under_torchrun_a_bad_flag_is_said_once(faces, tmp_path):
    result = torchrun(DCGAN, *tiny_argv(faces, tmp_path / "out", tmp_path / "cache",
                                        "--batch-size", "7"))
    assert result.returncode != 0
    line = ("dcgan.py: error: --batch-size 7 cannot be split evenly over 2 processes; use a "
            "multiple of 2")
    assert result.stderr.count(line) == 1, result.stderr[-2000:]


# 19: other platforms -------------------------------------------------------------------------------

SPAWNED_DATA_PATHS = """
import multiprocessing, sys
import torch
import dcgan
from dcgan_beyond import data, devices
multiprocessing.set_start_method("spawn")
images = dcgan.make_dataset(sys.argv[1], 32, 3)
cached = data.load_pixel_cache(images, 32, 3, sys.argv[2], workers=1)      # the cache build
proc = devices.Process()
torch.manual_seed(0)
decoded = dcgan.Batches(images, None, 8, 1, proc).first()                   # --no-cache
real = data.real_uint8(images, None, list(range(5)), workers=1)            # SWD's real images
assert torch.equal(real, cached[:5]) and decoded.shape == (8, 3, 32, 32)
torch.manual_seed(0)
assert torch.equal(decoded, dcgan.Batches(images, cached, 8, 0, proc).first())
print("spawned data paths: same pixels")
"""


def test_the_data_paths_work_when_workers_are_spawned(faces, tmp_path):
    """macOS and Windows start DataLoader workers with spawn, not fork: the cache build,
    the tutorial's pipeline (--no-cache) and SWD's decoding of real images, each with a
    spawned worker, give the pixels that the forked and in-process paths give."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(DCGAN))
    done = subprocess.run([sys.executable, "-c", SPAWNED_DATA_PATHS, faces, str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "spawned data paths: same pixels" in done.stdout


def test_without_file_locks_or_glibc_the_run_goes_on_with_notes(tiny, capsys, monkeypatch):
    monkeypatch.setattr(files, "fcntl", None)

    def no_glibc(name):
        raise OSError("not glibc")
    monkeypatch.setattr(devices.ctypes, "CDLL", no_glibc)
    status, out, err = run(tiny("out", "--max-iters", "1"), capsys)
    assert status == 0, err
    assert ("note: no file locks here (fcntl); nothing stops a second run from writing into "
            "the same --outdir") in out
    assert ("note: the C library is not glibc: freed memory goes back to the system every "
            "iteration, which slows CPU training") in out


# 16: generate's memory does not grow with --num-samples ------------------------------------------

def test_generate_streams_so_its_memory_does_not_grow_with_the_sample_count(tmp_path):
    torch.save(dcgan.Generator(nz=8, ngf=4, image_size=64).state_dict(), tmp_path / "netG.pt")
    code = ("import resource, sys, dcgan; dcgan.main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(DCGAN))
    peaks = {}
    for count in (1_000, 10_000):  # 10,000 images of 64 px held at once would be 117 MiB more
        done = subprocess.run([sys.executable, "-c", code, "generate", "--checkpoint",
                               str(tmp_path / "netG.pt"), "--num-samples", str(count),
                               "--outdir", str(tmp_path / str(count))],
                              env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-2000:]
        peaks[count] = int(done.stdout.split()[-1]) * 1024
    assert peaks[10_000] - peaks[1_000] < 40 * 2**20, peaks


SPAWNED_TRAINING = """
import multiprocessing, sys
multiprocessing.set_start_method("spawn")  # as on macOS and Windows
import dcgan
sys.exit(dcgan.main(sys.argv[1:]))
"""


def test_training_with_spawned_workers_gives_the_numbers_of_forked_ones(tiny, tmp_path):
    """A short run whose 2 DataLoader workers are spawned, not forked, to build the cache
    (the --no-cache pipeline under spawn: the test above): the same metrics, bit for bit."""
    assert run(tiny("forked", "--workers", "2", "--max-iters", "2")) == 0
    spawned = tiny("spawned", "--workers", "2", "--max-iters", "2")
    spawned[spawned.index("--cache-dir") + 1] = str(tmp_path / "spawned-cache")  # built anew
    env = dict(os.environ, PYTHONPATH=os.path.dirname(DCGAN))
    done = subprocess.run([sys.executable, "-c", SPAWNED_TRAINING, *spawned], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Decoded 20 images once" in done.stdout
    assert read_metrics(tmp_path / "spawned" / "metrics.csv") == read_metrics(tmp_path / "forked" / "metrics.csv")
