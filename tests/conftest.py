"""Shared fixtures: folders of random JPEGs made in a temporary folder, and a tiny
configuration that trains in about a second on the CPU."""
import csv
import os
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan


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


@pytest.fixture(scope="session")
def faces(tmp_path_factory):
    """The tutorial's layout: ROOT/img_align_celeba/*.jpg, 20 random non-square images."""
    root = tmp_path_factory.mktemp("celeba")
    make_images(root / "img_align_celeba", 20)
    return str(root)


def tiny_argv(dataroot, outdir, cache_dir, *extra):
    """argv of a tiny run: 32 px, narrow networks, batch 8 (3 batches of the 20 test
    images an epoch), 2 epochs; extra flags are appended."""
    return ["--dataroot", str(dataroot), "--outdir", str(outdir), "--cache-dir", str(cache_dir),
            "--image-size", "32", "--nz", "8", "--ngf", "4", "--ndf", "4", "--batch-size", "8",
            "--num-epochs", "2", "--log-every", "2", "--sample-every", "4", "--workers", "0", *extra]


@pytest.fixture
def tiny(tmp_path, faces):
    """Returns argv for a tiny run on `faces` writing into tmp_path/name."""
    def argv(name="out", *extra, dataroot=None):
        return tiny_argv(dataroot or faces, tmp_path / name, tmp_path / "cache", *extra)
    return argv


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, faces):
    """The output folder of a complete tiny run with the given extra flags, trained once
    per session; tests only read it."""
    done = {}

    def folder(*extra):
        if extra not in done:
            outdir = tmp_path_factory.mktemp("finished")
            assert dcgan.main(tiny_argv(faces, outdir, outdir.parent / "finished-cache", *extra)) == 0
            done[extra] = outdir
        return done[extra]
    return folder


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


@pytest.fixture
def small_filesystem(tmp_path):
    """A folder on a 1 MiB tmpfs, for runs that must find too little room (needs root)."""
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small file system needs root")
    yield small
    subprocess.run(["umount", str(small)])
