"""Other platforms and bounded memory: spawned workers give the numbers of forked ones, no
file locks or glibc only adds notes, generate streams its images."""
import os
import subprocess
import sys

import torch

import dcgan
from dcgan_beyond import devices, files
from helpers import ROOT, read_metrics, run


SPAWNED_DATA_PATHS = """
import multiprocessing, sys
import torch
import dcgan
from dcgan_beyond import data, devices
multiprocessing.set_start_method("spawn")
images = dcgan.make_dataset(sys.argv[1], 32, 3)
cached = data.load_pixel_cache(images, 32, 3, sys.argv[2], workers=1)      # the cache build
process = devices.Process()
torch.manual_seed(0)
decoded = data.Batches(images, None, 8, 1, process).first()                   # --no-cache
real = data.real_uint8(images, None, list(range(5)), workers=1)            # SWD's real images
assert torch.equal(real, cached[:5]) and decoded.shape == (8, 3, 32, 32)
torch.manual_seed(0)
assert torch.equal(decoded, data.Batches(images, cached, 8, 0, process).first())
print("spawned data paths: same pixels")
"""


def test_the_data_paths_work_when_workers_are_spawned(faces, tmp_path):
    """macOS and Windows start DataLoader workers with spawn, not fork: the cache build,
    the tutorial's pipeline (--no-cache) and SWD's decoding of real images, each with a
    spawned worker, give the pixels that the forked and in-process paths give."""
    env = dict(os.environ, PYTHONPATH=ROOT)
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


def test_generate_streams_so_its_memory_does_not_grow_with_the_sample_count(tmp_path):
    torch.save(dcgan.Generator(nz=8, ngf=4, image_size=64).state_dict(), tmp_path / "netG.pt")
    code = ("import resource, sys, dcgan; dcgan.main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    env = dict(os.environ, PYTHONPATH=ROOT)
    peaks = {}
    for count in (500, 6_000):  # 6,000 images of 64 px held at once would be 70 MiB more
        done = subprocess.run([sys.executable, "-c", code, "generate", "--checkpoint",
                               str(tmp_path / "netG.pt"), "--num-samples", str(count),
                               "--outdir", str(tmp_path / str(count))],
                              env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-2000:]
        peaks[count] = int(done.stdout.split()[-1]) * 1024
    assert peaks[6_000] - peaks[500] < 40 * 2**20, peaks


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
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", SPAWNED_TRAINING, *spawned], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Decoded 20 images once" in done.stdout
    assert read_metrics(tmp_path / "spawned" / "metrics.csv") == read_metrics(tmp_path / "forked" / "metrics.csv")
