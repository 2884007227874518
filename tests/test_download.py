"""--download against a stand-in Hub and file server on 127.0.0.1: the real client, the
real download, the order of sources, verification before and during the download, resume,
interruption, offline machines and full disks. No test reaches the internet: the built-in
sources are pointed at the stand-in."""
import glob
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import zipfile

import pytest

import dcgan
from dcgan_beyond import download, files
from helpers import make_images, one_error_line, run, start, tiny_argv, torchrun, wait_for
from fixtures.fake_hub import COMMIT, FakeHub


def celeba_zip(folder, count=20, size=(44, 52)):
    """A zip laid out as the official one: img_align_celeba/000001.jpg ... (random pixels)."""
    images = make_images(folder / "src" / "img_align_celeba", count, size=size)
    path = folder / "img_align_celeba.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for k, name in enumerate(sorted(os.listdir(images)), 1):
            archive.write(os.path.join(images, name), f"img_align_celeba/{k:06d}.jpg")
    return path.read_bytes()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running stand-in Hub, with HF_ENDPOINT pointing at it and an empty HF_HOME."""
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        yield server


def official(monkeypatch, data):
    """Makes `data` the official file, as far as the checks go."""
    monkeypatch.setattr(download, "CELEBA_ZIP_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(download, "CELEBA_ZIP_BYTES", len(data))


def hub_env(hub, tmp_path, **extra):
    return dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"),
                PYTHONDONTWRITEBYTECODE="1", **extra)


def leftovers(dataroot):
    """What in dataroot could be taken for CelebA, or is a partial file."""
    return sorted(os.listdir(dataroot)) if os.path.isdir(dataroot) else []


def test_download_from_a_hub_repo_makes_the_tutorials_layout_and_trains(hub, tiny, tmp_path, capsys):
    data = celeba_zip(tmp_path)
    hub.serve("fake/celeba", "img_align_celeba.zip", data)
    root = tmp_path / "celeba"
    status, out, err = run(tiny("out", "--download-from", f"fake/celeba@{COMMIT}",
                                dataroot=str(root)), capsys)
    assert status == 0, err
    assert sorted(os.listdir(root / "img_align_celeba")) == [f"{k:06d}.jpg" for k in range(1, 21)]
    assert leftovers(root) == ["img_align_celeba"]  # no zip, no .part, no unpacking folder
    sha256 = hashlib.sha256(data).hexdigest()
    assert (f"note: fake/celeba@{COMMIT}'s img_align_celeba.zip is not the official file "
            f"(SHA-256 {sha256}); using it as a copy of your own") in out
    assert f"Unpacked 20 images into {root / 'img_align_celeba'}" in out
    assert len(open(tmp_path / "out" / "metrics.csv").readlines()) == 1 + 6  # it trained
    # --download-from REPO@REVISION asks for that revision, and only for it
    paths = [path for _, path, _ in hub.requests]
    assert paths and all(path == f"/datasets/fake/celeba/resolve/{COMMIT}/img_align_celeba.zip"
                         for path in paths)


def test_an_existing_folder_needs_no_network(hub, tiny, tmp_path, capsys):
    root = tmp_path / "celeba"
    make_images(root / "img_align_celeba", 20)
    status, out, err = run(tiny("out", "--download", "--max-iters", "1", dataroot=str(root)), capsys)
    assert status == 0, err
    assert hub.requests == []


@pytest.mark.skipif(importlib.util.find_spec("gdown") is not None,
                    reason="with gdown installed, the Google Drive route would be tried")
def test_sources_in_order_a_wrong_announcement_is_refused_before_its_body(hub, tiny, tmp_path,
                                                                         capsys, monkeypatch):
    """The tutorial's asset, then the Hub copies: a source that announces another size or
    SHA-256 is named and skipped without a GET; the first official one is downloaded."""
    data = celeba_zip(tmp_path)
    official(monkeypatch, data)
    hub.serve_plain("/asset/img_align_celeba.zip", data + b"x")  # another size
    other = celeba_zip(tmp_path / "b", count=21)
    hub.serve("spaces/fake/space", "img_align_celeba.zip", other)
    hub.serve("fake/celeba", "img_align_celeba.zip", data)
    monkeypatch.setattr(download, "TUTORIAL_ASSET", f"{hub.url}/asset/img_align_celeba.zip")
    monkeypatch.setattr(download, "HUB_COPIES", ("spaces/fake/space", "fake/gone", "fake/celeba"))
    root = tmp_path / "celeba"
    status, out, err = run(tiny("out", "--download", "--max-iters", "1", dataroot=str(root)), capsys)
    assert status == 0, err
    other = hashlib.sha256(other).hexdigest()
    assert err.strip().splitlines()[:3] == [
        f"--download: {hub.url}/asset/img_align_celeba.zip: it announces size {len(data) + 1:,} "
        "bytes, not the official file's; not downloaded; trying the next source",
        f"--download: spaces/fake/space: it announces SHA-256 {other}, not the official "
        "file's; not downloaded; trying the next source",
        "--download: fake/gone: not found (RepositoryNotFoundError); trying the next source"]
    assert [(method, path) for method, path, _ in hub.requests] == [
        ("HEAD", "/asset/img_align_celeba.zip"),
        ("HEAD", "/spaces/fake/space/resolve/main/img_align_celeba.zip"),
        ("HEAD", "/datasets/fake/gone/resolve/main/img_align_celeba.zip"),
        ("HEAD", "/datasets/fake/celeba/resolve/main/img_align_celeba.zip"),
        ("GET", "/datasets/fake/celeba/resolve/main/img_align_celeba.zip")]
    assert "not the official file" not in out  # the official file: no note
    assert len(os.listdir(root / "img_align_celeba")) == 20
    assert leftovers(root) == ["img_align_celeba"]


@pytest.mark.skipif(importlib.util.find_spec("gdown") is not None,
                    reason="with gdown installed, the Google Drive route would be tried")
def test_a_body_that_is_not_the_official_file_is_refused_and_removed(hub, tiny, tmp_path, capsys,
                                                                    monkeypatch):
    """A plain server announces no digest: the SHA-256 computed while the bytes arrive
    refuses the file, which is then removed."""
    data = celeba_zip(tmp_path)
    monkeypatch.setattr(download, "CELEBA_ZIP_BYTES", len(data))  # the right size, other bytes
    hub.serve_plain("/asset/img_align_celeba.zip", data)
    monkeypatch.setattr(download, "TUTORIAL_ASSET", f"{hub.url}/asset/img_align_celeba.zip")
    monkeypatch.setattr(download, "HUB_COPIES", ())
    root = tmp_path / "celeba"
    status, out, err = run(tiny("out", "--download", dataroot=str(root)), capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert lines[0] == (f"--download: {hub.url}/asset/img_align_celeba.zip: its SHA-256 "
                        f"{hashlib.sha256(data).hexdigest()} is not the official "
                        f"{download.CELEBA_ZIP_SHA256}; removed it")
    assert one_error_line("\n".join(lines[1:])) == (
        "--download: no source could be used, and torchvision's Google Drive route needs "
        f"the gdown package (pip install gdown); {download.MANUAL_ROUTES}, and unzip it into {root}")
    assert leftovers(root) == []  # the refused file is gone


@pytest.mark.skipif(importlib.util.find_spec("gdown") is not None,
                    reason="with gdown installed, the Google Drive route would be tried")
@pytest.mark.parametrize("route", ["built-in", "--download-from"])
def test_a_source_that_breaks_its_announced_sha256_is_refused_on_every_route(
        hub, tiny, tmp_path, capsys, monkeypatch, route):
    """A repo announces the official SHA-256 and size, then sends other bytes (a valid zip):
    they are removed, nothing is unpacked or trained, and the line names both digests."""
    real, sent = celeba_zip(tmp_path / "real"), celeba_zip(tmp_path / "sent", count=21)
    official(monkeypatch, real)
    monkeypatch.setattr(download, "CELEBA_ZIP_BYTES", len(sent))  # the size it announces
    announced = hashlib.sha256(real).hexdigest()
    hub.serve("fake/celeba", "img_align_celeba.zip", sent, sha256=announced)
    monkeypatch.setattr(download, "TUTORIAL_ASSET", f"{hub.url}/gone/img_align_celeba.zip")
    monkeypatch.setattr(download, "HUB_COPIES", ("fake/celeba",))
    root = tmp_path / "celeba"
    flags = ["--download"] if route == "built-in" else ["--download-from", "fake/celeba"]
    status, out, err = run(tiny("out", *flags, dataroot=str(root)), capsys)
    assert status == 2
    problem = (f"it announced SHA-256 {announced} and sent bytes whose SHA-256 is "
               f"{hashlib.sha256(sent).hexdigest()}: corrupt or tampered with; removed them")
    if route == "built-in":
        assert f"--download: fake/celeba: {problem}" in err.splitlines()
    else:
        assert one_error_line(err) == (f"--download-from fake/celeba: {problem}, and unpacked "
                                       "nothing; try again later, or another source (data/README.md)")
    assert leftovers(root) == [] and not (tmp_path / "out").exists()


def test_a_plain_server_of_your_own_is_checked_by_size_alone_and_says_so(hub, tiny, tmp_path,
                                                                        capsys):
    data = celeba_zip(tmp_path)
    hub.serve_plain("/mirror/img_align_celeba.zip", data)
    url = f"{hub.url}/mirror/img_align_celeba.zip"
    status, out, err = run(tiny("out", "--download-from", url, "--max-iters", "1",
                                dataroot=str(tmp_path / "celeba")), capsys)
    assert status == 0, err
    assert (f"note: {url}'s img_align_celeba.zip is not the official file (SHA-256 "
            f"{hashlib.sha256(data).hexdigest()}); using it as a copy of your own (the source "
            "announces no SHA-256: nothing but the size was checked)") in out


def test_a_zip_in_the_folder_is_named_and_then_checked_and_unpacked_without_network(
        hub, tiny, tmp_path, capsys, monkeypatch):
    root = tmp_path / "celeba"
    root.mkdir()
    data = celeba_zip(tmp_path)
    (root / "img_align_celeba.zip").write_bytes(data)
    status, out, err = run(tiny("out", dataroot=str(root)), capsys)
    assert status == 2
    assert one_error_line(err) == (
        f"--dataroot {root}: holds img_align_celeba.zip but no images yet; add --download to "
        "check and unpack it (no network needed), or unzip it there")
    status, out, err = run(tiny("out", "--download", "--max-iters", "1", dataroot=str(root)), capsys)
    assert status == 0, err
    assert (f"note: {root / 'img_align_celeba.zip'} is not the official file (SHA-256 "
            f"{hashlib.sha256(data).hexdigest()}); using it as a copy of your own") in out
    assert hub.requests == []  # no network
    assert leftovers(root) == ["img_align_celeba"] and len(os.listdir(root / "img_align_celeba")) == 20
    # the official file itself is unpacked without a note
    other = tmp_path / "other"
    other.mkdir()
    (other / "img_align_celeba.zip").write_bytes(data)
    official(monkeypatch, data)
    status, out, err = run(tiny("out2", "--download", "--max-iters", "1", dataroot=str(other)), capsys)
    assert status == 0, err
    assert "not the official file" not in out and hub.requests == []


@pytest.mark.parametrize("route", ["hub", "https"])
def test_a_connection_cut_mid_file_resumes_on_the_next_download(hub, tiny, tmp_path, capsys, route):
    # the client writes in blocks of 10 MiB: a cut after the first block keeps it
    data = celeba_zip(tmp_path, count=20, size=(1000, 1200))
    assert len(data) > 12 * 2**20
    hub.serve("fake/celeba", "img_align_celeba.zip", data)
    hub.serve_plain("/mirror/img_align_celeba.zip", data)
    source, path = (("fake/celeba", "/datasets/fake/celeba/resolve/main/img_align_celeba.zip")
                    if route == "hub" else
                    (f"{hub.url}/mirror/img_align_celeba.zip", "/mirror/img_align_celeba.zip"))
    hub.cut_after = 11 * 2**20
    root = tmp_path / "celeba"
    argv = tiny("out", "--download-from", source, "--max-iters", "1", dataroot=str(root))
    status, out, err = run(argv, capsys)
    assert status == 2
    message = one_error_line("\n".join(l for l in err.splitlines() if l.startswith("dcgan.py")))
    assert message.startswith(f"--download: the connection broke after 10.0 MiB of "
                              f"{files.size_text(len(data))} (")
    assert message.endswith("); run --download again to resume")
    parts = glob.glob(str(root / ".img_align_celeba.zip.*.part"))
    assert [os.path.getsize(p) for p in parts] == [10 * 2**20]
    assert not (root / "img_align_celeba").exists() and not (root / "img_align_celeba.zip").exists()
    assert not (tmp_path / "out").exists()  # nothing was written before the inputs were whole

    hub.cut_after, hub.requests[:] = None, []
    status, out, err = run(argv, capsys)
    assert status == 0, err
    assert ("GET", path, f"bytes={10 * 2**20}-") in hub.requests
    if route == "https":  # a plain server gets no Hub token, and the note on plain HTTP
        assert all("authorization" not in {k.lower() for k in h} for h in hub.headers)
        assert (f"note: {source} is plain HTTP: nothing protects the bytes on the way; the "
                "SHA-256 below is the only check") in out
    assert len(os.listdir(root / "img_align_celeba")) == 20
    assert leftovers(root) == ["img_align_celeba"]


def test_ctrl_c_during_the_unpack_leaves_nothing_that_looks_complete(hub, tmp_path, tiny):
    hub.serve("fake/celeba", "img_align_celeba.zip", celeba_zip(tmp_path, count=4000, size=(8, 8)))
    root = tmp_path / "celeba"
    argv = tiny("out", "--download-from", "fake/celeba", "--max-iters", "1", dataroot=str(root))
    process = subprocess.Popen([sys.executable, dcgan.__file__, *argv], env=hub_env(hub, tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: glob.glob(str(root / ".unpacking-*" / "img_align_celeba" / "*.jpg"))
             or process.poll() is not None, timeout=120)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "dcgan.py: interrupted"
    assert leftovers(root) == ["img_align_celeba.zip"]  # the verified download stays

    hub.requests[:] = []
    assert run(argv) == 0
    assert hub.requests == []  # the next run unpacks what it has
    assert len(os.listdir(root / "img_align_celeba")) == 4000
    assert leftovers(root) == ["img_align_celeba"]


def test_offline_with_an_empty_cache_gives_the_manual_routes(hub, tmp_path, tiny):
    root = tmp_path / "celeba"
    done = subprocess.run([sys.executable, dcgan.__file__, *tiny("out", "--download", dataroot=str(root))],
                          env=hub_env(hub, tmp_path, HF_HUB_OFFLINE="1"), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert one_error_line(done.stderr) == (
        f"--download: HF_HUB_OFFLINE is set, and CelebA is not here yet; {download.MANUAL_ROUTES}, "
        f"and unzip it into {root}")
    assert not root.exists() and hub.requests == []


def test_no_network_gives_the_manual_routes(monkeypatch, tmp_path, tiny, capsys):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(download, "TUTORIAL_ASSET", "http://127.0.0.1:9/img_align_celeba.zip")
    root = tmp_path / "celeba"
    status, out, err = run(tiny("out", "--download", dataroot=str(root)), capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert [line.split(": cannot reach it")[0] for line in lines[:3]] == [
        "--download: http://127.0.0.1:9/img_align_celeba.zip", *(f"--download: {name}" for name in download.HUB_COPIES)]
    message = one_error_line("\n".join(lines[3:]))
    assert message.startswith("--download: no source could be reached (cannot reach it (")
    assert message.endswith(f"{download.MANUAL_ROUTES}, and unzip it into {root}")
    assert not root.exists()


def test_a_full_disk_mid_download_names_the_sizes(hub, tmp_path, tiny):
    data = celeba_zip(tmp_path, count=40, size=(178, 218))
    hub.serve("fake/celeba", "img_align_celeba.zip", data)
    root = tmp_path / "celeba"
    os.makedirs(root)
    # writes past a third of the zip fail, as on a full disk
    process = start(tiny("out", "--download-from", "fake/celeba", dataroot=str(root)),
                    limit_bytes=len(data) // 3)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    message = one_error_line("\n".join(l for l in err.splitlines() if l.startswith("dcgan.py")))
    assert message.startswith("--download: the disk is full or the file too large (File too large) after ")
    assert message.endswith(f"CelebA needs {files.size_text(len(data))} for the zip and about as much "
                            f"for the folder in {root}; free some space and run --download again")
    assert not (root / "img_align_celeba").exists() and not (root / "img_align_celeba.zip").exists()


def test_too_little_room_is_refused_before_downloading(hub, small_filesystem, tmp_path, tiny, capsys):
    small = small_filesystem
    data = celeba_zip(tmp_path, count=30, size=(178, 218))  # about 0.6 MiB: zip and folder do not fit
    hub.serve("fake/celeba", "img_align_celeba.zip", data)
    status, out, err = run(tiny("out", "--download-from", "fake/celeba", dataroot=str(small)), capsys)
    assert status == 2
    assert one_error_line(err) == (
        f"--download: CelebA needs {files.size_text(len(data))} more for the zip and "
        f"{files.size_text(len(data))} for the unpacked folder, and {small} has 1.0 MiB free; "
        "free some space or choose another --dataroot")
    assert os.listdir(small) == [] and not any(method == "GET" for method, _, _ in hub.requests)


def test_under_torchrun_rank_0_downloads_while_the_other_ranks_wait(hub, tmp_path):
    hub.serve("fake/celeba", "img_align_celeba.zip", celeba_zip(tmp_path))
    root = tmp_path / "celeba"
    argv = tiny_argv(root, tmp_path / "out", tmp_path / "cache", "--download-from", "fake/celeba",
                     "--max-iters", "2", "--batch-size", "4")
    result = torchrun(dcgan.__file__, *argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"rank 1: waiting for rank 0 to download CelebA into {root}" in result.stderr
    assert [method for method, _, _ in hub.requests] == ["HEAD", "GET"]  # once, by rank 0
    assert len(os.listdir(root / "img_align_celeba")) == 20
    assert len(open(tmp_path / "out" / "metrics.csv").readlines()) == 1 + 2
