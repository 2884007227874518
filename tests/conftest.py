"""Shared fixtures: folders of random JPEGs made in a temporary folder, and a tiny
configuration that trains in about a second on the CPU."""
import subprocess

import pytest
import torch

import dcgan
from helpers import make_images, tiny_argv


@pytest.fixture(autouse=True)
def torch_threads():
    """A run with --threads or --fast sets torch's thread count for the process: give it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def faces(tmp_path_factory):
    """The tutorial's layout: ROOT/img_align_celeba/*.jpg, 20 random non-square images."""
    root = tmp_path_factory.mktemp("celeba")
    make_images(root / "img_align_celeba", 20)
    return str(root)


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


@pytest.fixture
def read_only_copy(tmp_path):
    """read_only_copy(files): a folder holding those files (name: text) on a tmpfs mounted
    read-only, as a checkout on a read-only disk is (needs root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a file system needs root")

    def make(files):
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        return folder
    yield make
    subprocess.run(["umount", str(folder)])


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
