"""FID and KID through torch-fidelity, with its Inception network built from random
weights (saved to a file and given as --fid-weights): no network, no download."""
import csv
import math
import os
import signal
from unittest import mock

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as inception

from dcgan_beyond import fidelity, metrics
from helpers import RunsCode, assert_same_run, interrupt_at, one_error_line, run

CPU = torch.device("cpu")


def random_inception(folder, seed):
    """torch-fidelity's InceptionV3 with random weights, saved as a state dict. He
    initialisation keeps the signal alive through its 94 layers, so that different images
    get different features."""
    torch.manual_seed(seed)
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(inception.FeatureExtractorInceptionV3, "load_state_dict",
                              lambda self, state_dict: None):
        model = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for layer in model.modules():
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    path = folder / fidelity.INCEPTION_FILE
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="session")
def inception_file(tmp_path_factory):
    return random_inception(tmp_path_factory.mktemp("inception"), seed=0)


def test_other_inception_weights_never_meet_cached_real_statistics(inception_file, tmp_path):
    """A second weights file (a wrong first download, a copy, a new torch-fidelity) with the
    same cache folder gets the numbers of a fresh folder, not the first file's statistics."""
    state = torch.load(inception_file, weights_only=True)
    first_conv = next(k for k, v in state.items() if v.dim() == 4)
    state[first_conv] = state[first_conv] * 1.5  # other weights, same shapes
    other = str(tmp_path / fidelity.INCEPTION_FILE)
    torch.save(state, other)
    real = images(6, 0)

    def floor(weights, cache):
        settings = metrics.EvalSettings(metrics=("fid",), seed=0, fid_weights=weights,
                                        cache_dir=str(cache))
        return fidelity.FidelityEvaluator(real, "faces", settings, CPU,
                                          log=lambda *a: None).floor["fid"]

    first = floor(inception_file, tmp_path / "shared")
    second = floor(other, tmp_path / "shared")
    assert second == floor(other, tmp_path / "fresh")
    assert second != first


def images(count, seed):
    return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def scores(a, b, weights, cache):
    return fidelity.fidelity_scores(fidelity.PixelImages(a), fidelity.PixelImages(b), ("fid", "kid"),
                                 weights, CPU, 0, str(cache))


def test_fid_is_zero_for_a_set_against_itself_positive_between_two_and_repeatable(inception_file, tmp_path):
    a, b = images(10, 0), images(10, 1) // 2
    same = scores(a, a, inception_file, tmp_path)
    assert same["fid"] == pytest.approx(0, abs=1e-3)
    assert same["kid"] == pytest.approx(0, abs=1e-3)
    different = scores(a, b, inception_file, tmp_path)
    assert different["fid"] > 0.01
    assert scores(a, b, inception_file, tmp_path / "again") == different  # the same seed


def read_eval(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluate_prints_fid_with_its_sample_counts(inception_file, finished_run, tmp_path, capsys):
    status, out, err = run(["evaluate", "--checkpoint", str(finished_run() / "checkpoint.pt"),
                            "--metrics", "fid,kid", "--fid-weights", inception_file,
                            "--eval-samples", "6", "--cache-dir", str(tmp_path)], capsys)
    assert status == 0, err
    assert ("(6 generated vs 6 real images, 32 px; not comparable with papers, which use "
            "50,000 generated images against all real ones; floor FID ") in out
    floor_line = next(l for l in out.splitlines() if l.startswith("FID/KID floor (real vs real, "))
    assert floor_line.startswith("FID/KID floor (real vs real, two halves of 6 images): FID ")
    floor_fid, floor_kid = (float(v) for v in floor_line.split(": FID ")[1].split(", KID "))
    assert math.isfinite(floor_fid) and floor_fid >= 0 and math.isfinite(floor_kid)
    assert [line.split()[0] for line in out.splitlines()[-2:]] == ["fid", "kid"]


def test_training_with_fid_writes_eval_csv_and_resumes_exactly(inception_file, tiny, tmp_path, monkeypatch, capsys):
    flags = ("--eval-every", "100", "--eval-samples", "6", "--eval-metrics", "swd,fid",
             "--fid-weights", inception_file)  # measured at iterations 0 and 5, the last
    assert run(tiny("whole", *flags)) == 0
    rows = read_eval(tmp_path / "whole" / "eval.csv")
    assert [r["iteration"] for r in rows] == ["0", "5"]
    for r in rows:
        assert float(r["fid"]) > 0 and float(r["swd_avg"]) > 0
        assert math.isfinite(float(r["floor_fid"])) and float(r["floor_fid"]) >= 0
    assert os.path.getsize(tmp_path / "whole" / "fid.png") > 0
    # evaluate on the finished run repeats training's last row
    status, out, err = run(["evaluate", "--checkpoint", str(tmp_path / "whole" / "checkpoint.pt"),
                            "--metrics", "fid", "--fid-weights", inception_file], capsys)
    assert status == 0, err
    assert out.splitlines()[-1] == (f"fid {float(rows[-1]['fid']):.4g} "
                                    f"(floor {float(rows[-1]['floor_fid']):.4g})")
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        assert run(tiny("parts", *flags)) == 128 + signal.SIGINT
    assert run(["--outdir", str(tmp_path / "parts"), "--resume"]) == 0
    assert_same_run(tmp_path / "whole", tmp_path / "parts")
    assert read_eval(tmp_path / "parts" / "eval.csv") == rows


def test_a_weights_file_that_would_run_code_is_refused_not_run(finished_run, tmp_path, capsys):
    marker, path = tmp_path / "pwned", tmp_path / fidelity.INCEPTION_FILE
    torch.save({"fc.weight": RunsCode(marker)}, path)
    status, out, err = run(["evaluate", "--checkpoint", str(finished_run() / "checkpoint.pt"),
                            "--metrics", "fid", "--fid-weights", str(path)], capsys)
    assert status == 2
    assert one_error_line(err) == (
        f"--fid-weights {path}: refused: the file holds Python objects that would run code when "
        f"loaded; use torch-fidelity's {fidelity.INCEPTION_FILE}")
    assert not marker.exists()


def test_without_network_or_weights_one_line_and_nothing_written(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached copy
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens there: no network
    status, out, err = run(tiny("out", "--eval-every", "3", "--eval-metrics", "fid"), capsys)
    assert status == 2
    message = one_error_line(err)
    assert message.startswith(f"FID and KID need torch-fidelity's Inception weights, "
                              f"{fidelity.INCEPTION_FILE} (92 MB), which cannot be downloaded here (")
    assert message.endswith(f"on a machine with network fetch {fidelity.INCEPTION_URL} and give it "
                            f"with --fid-weights PATH, or put it in "
                            f"{tmp_path / 'torch-home' / 'hub' / 'checkpoints'}")
    assert not (tmp_path / "out").exists()


def test_evaluate_offline_refuses_before_measuring_anything(finished_run, tmp_path, monkeypatch,
                                                             capsys):
    """evaluate --metrics swd,fid,kid without the Inception weights says so at once: no SWD
    floor is computed first (25 s on CelebA) only to fail after it."""
    checkpoint = finished_run() / "checkpoint.pt"
    capsys.readouterr()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached copy
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens there: no network
    status, out, err = run(["evaluate", "--checkpoint", str(checkpoint),
                            "--metrics", "swd,fid,kid", "--cache-dir", str(tmp_path / "cache")],
                           capsys)
    assert status == 2
    assert one_error_line(err).startswith("FID and KID need torch-fidelity's Inception weights")
    assert out == ""  # no SWD floor, no image decoded
    assert not (tmp_path / "cache").exists()
