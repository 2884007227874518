"""One run per outdir: a second run there stops at once; a killed run's lock blocks nobody;
the disk filling up mid-run costs no earlier result."""
import os
import signal
import socket


from helpers import long_run, one_error_line, read_metrics, rows, run, start, wait_for


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


def test_a_full_disk_while_checkpointing_is_one_line_and_the_last_checkpoint_stays(tiny, tmp_path):
    assert run(tiny("out", "--max-iters", "2")) == 0
    path = tmp_path / "out" / "checkpoint.pt"
    before = path.read_bytes()
    process = start(["--outdir", tmp_path / "out", "--resume", "--max-iters", "6",
                     "--checkpoint-every", "1"],
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


def test_a_read_only_checkout_with_an_earlier_runs_lock_says_to_choose_another_outdir(
        tiny, read_only_copy, monkeypatch, capsys):
    """A checkout on a read-only disk whose outputs/ holds an earlier run's run.lock: the
    advice is --outdir (this run never started, so --resume would not help)."""
    monkeypatch.chdir(read_only_copy({"outputs/run.lock": ""}))
    argv = tiny("unused")
    argv[argv.index("--outdir") + 1] = "outputs"  # the default
    status, out, err = run(argv, capsys)
    assert status == 2
    assert one_error_line(err) == ("--outdir outputs: cannot write there (Read-only file "
                                   "system); choose a writable folder")
