"""docs/scripts/gpu_check.py, the one check a GPU machine runs, can fail: its exit status
and lines, tested here on the CPU (its CUDA checks themselves need a GPU; without one it
says so and exits 0)."""
import subprocess
import sys

import pytest
import torch

from docs.scripts import gpu_check
from helpers import ROOT


def test_a_failed_check_makes_the_exit_status_1_and_is_named(capsys):
    results = gpu_check.Results()
    assert results.check(True, "one", "fine") is True
    results.info("two", "a figure")
    assert results.check(False, "three", "broken") is False
    assert results.status() == 1
    assert capsys.readouterr().out.splitlines() == [
        "PASS one: fine", "INFO two: a figure", "FAIL three: broken", "1 failed: three"]


def test_only_passed_checks_and_information_exit_0(capsys):
    results = gpu_check.Results()
    results.check(True, "one", "fine")
    results.info("two", "a figure")
    assert results.status() == 0


def test_a_check_that_crashes_fails_and_the_others_still_run(monkeypatch, tmp_path, capsys):
    ran = []

    def crashes(results, tmp, data):
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(gpu_check, "check_devices", crashes)
    monkeypatch.setattr(gpu_check, "check_adam", lambda results, tmp, data: ran.append("adam"))
    results = gpu_check.Results()
    gpu_check.run_checks(results, ["devices", "adam"], str(tmp_path), str(tmp_path))
    assert ran == ["adam"] and results.status() == 1
    assert ("FAIL devices: crashed: RuntimeError: CUDA error: an illegal memory access"
            in capsys.readouterr().out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU it runs the real checks")
def test_gpu_check_says_no_cuda_device_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "docs.scripts.gpu_check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{name}: no CUDA device" for name in
                                        ("devices", "tutorial", "resume", "flags", "bench",
                                         "celeba", "adam")]
