"""--max-time: a run that stops when its training time reaches a limit, with every output
written; resumed to a longer limit it goes on as any resume does."""
import torch

from helpers import FIGURES, DCGAN, one_error_line, read_metrics, run, tiny_argv, torchrun


def test_a_duration_is_read_in_seconds_minutes_or_hours_and_anything_else_is_one_line(tiny, capsys):
    status, out, err = run(tiny("out", "--max-time", "2x"), capsys)
    assert status == 2
    assert one_error_line(err) == ("argument --max-time: must be a duration such as 90m, 2h, 1h30m "
                                   "or 3600 (seconds), not 2x (see dcgan.py --help)")


def test_the_limit_ends_the_run_with_every_output_and_a_longer_one_goes_on(tiny, tmp_path, capsys,
                                                                        finished_run):
    """A limit of a millisecond is reached by the first iteration: the run writes its weights,
    figures, metrics, a last evaluation row and its checkpoint, and says how to go on; resumed
    with a longer limit it ends as the run done in one go (G's BatchNorm running statistics
    aside: the extra grid moved them, as every grid of the tutorial's does)."""
    status, out, err = run(tiny("parts", "--max-time", "0.001", "--eval-every", "100"), capsys)
    assert status == 0, err
    parts = tmp_path / "parts"
    path = parts / "checkpoint.pt"
    (line,) = [line for line in out.splitlines() if line.startswith("Stopped for time")]
    assert line.startswith("Stopped for time after iteration 0: ")
    assert line.endswith(f"s of training reached --max-time 0.001s; every output is written. Go "
                         f"on with: python dcgan.py --resume {path} --max-time LONGER (the whole "
                         "run's time, e.g. 0.002s)")
    assert all((parts / name).exists() for name in FIGURES + ["netG.pt", "netD.pt", "swd.png"])
    assert len(read_metrics(parts / "metrics.csv")) == 1
    assert [row.split(",")[0] for row in (parts / "eval.csv").read_text().splitlines()[1:]] == ["0"]
    assert torch.load(path, weights_only=True)["iteration"] == 1
    status, out, err = run(["--resume", str(path), "--max-time", "1h", "--eval-every", "100"], capsys)
    assert status == 0 and "Resuming with changed settings: --max-time 0.001 -> 3600.0" in out
    assert "Stopped for time" not in out
    whole = finished_run()
    assert read_metrics(whole / "metrics.csv") == read_metrics(parts / "metrics.csv")
    for name in ("netG.pt", "netD.pt"):
        a, b = (torch.load(d / name, weights_only=True) for d in (whole, parts))
        assert all(torch.equal(a[k], b[k]) for k in a if "running" not in k and "num_batches" not in k)


def test_the_time_counted_includes_earlier_processes(tiny, tmp_path):
    """A resume whose limit the run's earlier processes already spent trains nothing."""
    assert run(tiny("out", "--max-iters", "2")) == 0
    elapsed = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["elapsed"]
    assert run(["--outdir", str(tmp_path / "out"), "--resume", "--max-iters", "6",
                "--max-time", str(elapsed / 2)]) == 0
    assert len(read_metrics(tmp_path / "out" / "metrics.csv")) == 2


def test_under_torchrun_every_rank_stops_at_the_same_iteration(faces, tmp_path):
    result = torchrun(DCGAN, *tiny_argv(faces, tmp_path / "out", tmp_path / "cache",
                                        "--max-time", "0.001"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Stopped for time after iteration 0:" in result.stdout
    assert len(read_metrics(tmp_path / "out" / "metrics.csv")) == 1
    assert (tmp_path / "out" / "netG.pt").exists()
