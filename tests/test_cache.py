"""The decode-once cache under real faults: damage it heals, mapping not loading, too little
room, a killed build, names that are not UTF-8, workers that are spawned."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import dcgan
from dcgan_beyond import data
from helpers import ROOT, make_images, one_error_line, run, wait_for


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
    env = dict(os.environ, PYTHONPATH=ROOT)
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


def test_file_names_that_are_not_utf8_train_with_the_cache(tmp_path, tiny, capsys):
    root = make_images(tmp_path / "odd" / "img_align_celeba", 6)
    os.rename(os.path.join(bytes(root), b"000001.jpg"), os.path.join(bytes(root), b"caf\xe9.jpg"))
    status, out, err = run(tiny("out", "--max-iters", "1", dataroot=str(root.parent)), capsys)
    assert status == 0, err
    assert "Decoded 6 images once" in out
