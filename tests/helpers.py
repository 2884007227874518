"""What the tests share beyond conftest.py's fixtures: random images, tiny runs, reading
outputs, running dcgan.py in this process, in a process of its own or under torchrun, and
the assertions that several concerns make (one error line, the same run)."""
import csv
import os
import re
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

import dcgan

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
DCGAN = os.path.join(ROOT, "dcgan.py")
FIXTURES = os.path.join(TESTS, "fixtures")
FIGURES = ["training_images.png", "loss_curve.png", "real_vs_fake.png", "progress.gif"]


def make_images(folder, count, size=(44, 52), seed=0, mode="RGB"):
    """count random images of size (width, height) as JPEGs in folder."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    for k in range(count):
        shape = (size[1], size[0], channels) if channels else (size[1], size[0])
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        ext = "png" if mode == "RGBA" else "jpg"
        image.save(os.path.join(folder, f"{k:06d}.{ext}"))
    return folder


def tiny_argv(dataroot, outdir, cache_dir, *extra):
    """argv of a tiny run: 32 px, narrow networks, batch 8 (3 batches of the 20 test
    images an epoch), 2 epochs; extra flags are appended."""
    return ["--dataroot", str(dataroot), "--outdir", str(outdir), "--cache-dir", str(cache_dir),
            "--image-size", "32", "--nz", "8", "--ngf", "4", "--ndf", "4", "--batch-size", "8",
            "--num-epochs", "2", "--log-every", "2", "--sample-every", "4", "--workers", "0", *extra]


def read_metrics(path, with_seconds=False):
    """metrics.csv as a list of dicts of floats (without the wall-clock column)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) for k, v in row.items() if with_seconds or k != "seconds"}
            for row in rows]


def run(argv, capsys=None):
    """dcgan.main in this process; returns (status, stdout, stderr) when capsys is given."""
    status = dcgan.main(argv)
    if capsys is None:
        return status
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def tiny_models(seed=0):
    """A 32 px Generator and Discriminator, 4 feature maps wide, initialised as training does."""
    torch.manual_seed(seed)
    netG = dcgan.Generator(nz=8, ngf=4, image_size=32)
    netD = dcgan.Discriminator(ndf=4, image_size=32)
    netG.apply(dcgan.weights_init)
    netD.apply(dcgan.weights_init)
    return netG, netD


def one_error_line(err):
    """The one error line of stderr (progress lines of the run before it aside)."""
    progress = re.compile(r"^epoch \d+/\d+: \d+ iterations in ")
    lines = [line for line in err.splitlines() if line.strip() and not progress.match(line)]
    assert len(lines) == 1, err
    assert lines[0].startswith("dcgan.py: error: ")
    assert "Traceback" not in err
    return lines[0][len("dcgan.py: error: "):]


def assert_same_run(a, b):
    """Two output folders hold bit-identical weights, metrics (but for wall-clock
    seconds), fixed-noise grids and figures."""
    for name in ("netG.pt", "netD.pt"):
        sa, sb = (torch.load(d / name, weights_only=True) for d in (a, b))
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert read_metrics(a / "metrics.csv") == read_metrics(b / "metrics.csv")
    assert sorted(os.listdir(a / "progress")) == sorted(os.listdir(b / "progress"))
    for name in FIGURES + [os.path.join("progress", f) for f in os.listdir(a / "progress")]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def interrupt_at(monkeypatch, iteration, signum=signal.SIGINT):
    """Sends this process a signal during the given iteration (0-based), as Ctrl-C would."""
    real_step, calls = dcgan.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == iteration + 1:
            os.kill(os.getpid(), signum)
        return real_step(*args, **kwargs)
    monkeypatch.setattr(dcgan, "train_step", step)


def start(argv, limit_bytes=None):
    """dcgan.py in a process of its own (a file size limit makes a full disk)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, DCGAN, *map(str, argv)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit if limit_bytes else None)


def wait_for(condition, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def torchrun(*argv, nproc=2, timeout=240):
    """dcgan.py (or a fixture program) under torchrun, on the CPU."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", *argv], env=env, capture_output=True,
                          text=True, timeout=timeout)


def fixed_batch():
    """The real batch and noise that fixtures/ddp_probe.py's d_update and its test share."""
    real = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(8, 8, 1, 1, generator=torch.Generator().manual_seed(2))
    return real, noise


class RunsCode:
    """Unpickling this would run a shell command."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def long_run(tiny, name="out"):
    """A run that trains until stopped (log lines and checkpoints every iteration)."""
    return tiny(name, "--num-epochs", "500", "--log-every", "1", "--checkpoint-every", "1")


def rows(path):
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0
