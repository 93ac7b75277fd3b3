"""The verbs that train or evaluate (train, eval, run) take the same --threads, --device and
--no-progress (bench/verbs/common.py), and reject bad values in one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.cli import main

REPO = Path(__file__).resolve().parent.parent
VERBS = ("train", "eval", "run")
TINY = ["--dataset", "synthetic", "--model", "sbn:4-8", "--updates", "5",
        "--set", "eval_interval=5", "--set", "eval_examples=50", "--set", "test_examples=50"]


def bench(*args):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def verb_args(verb: str, tmp_path) -> list[str]:
    """The least a verb needs before it reads its compute options."""
    return {"train": [verb, *TINY, "--out", str(tmp_path / "run")],
            "eval": [verb, str(tmp_path / "run")],
            "run": [verb, "quick", "--budget", "smoke", "--runs-dir", str(tmp_path / "runs"),
                    "--results-dir", str(tmp_path / "results")]}[verb]


@pytest.mark.parametrize("verb", VERBS)
def test_help_lists_the_compute_options(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    for option in ("--threads", "--device", "--no-progress"):
        assert option in printed, (verb, option)


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("option, message", [
    (["--threads", "0"], "error: --threads must be at least 1, got 0"),
    (["--device", "tpu"], "error: unknown device 'tpu'; valid devices: cpu, cuda"),
])
def test_a_bad_compute_option_is_one_line_and_exit_2(verb, option, message, tmp_path, capsys):
    assert main([*verb_args(verb, tmp_path), *option]) == 2
    captured = capsys.readouterr()
    assert captured.err == message + "\n"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "run").exists()  # no work done


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("verb", VERBS)
def test_cuda_without_a_device_is_one_line(verb, tmp_path, capsys):
    assert main([*verb_args(verb, tmp_path), "--device", "cuda"]) == 2
    assert "torch sees no CUDA device; use --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # `run` writes no failed record per cell


def test_a_bad_thread_count_has_no_traceback(tmp_path):
    result = bench(*verb_args("train", tmp_path), "--threads", "0")
    assert result.returncode == 2
    assert result.stderr == "error: --threads must be at least 1, got 0\n"


def test_threads_and_no_progress_are_applied_by_train_and_eval(tmp_path):
    result = bench(*verb_args("train", tmp_path), "--threads", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "upd" not in result.stderr  # no progress bar
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["environment"]["threads"] == 1
    quiet = bench("eval", str(tmp_path / "run"), "--k", "20", "--threads", "1", "--no-progress")
    assert quiet.returncode == 0, quiet.stderr
    assert "K=20" not in quiet.stderr
    shown = bench("eval", str(tmp_path / "run"), "--k", "20", "--threads", "1")
    assert shown.returncode == 0 and "K=20" in shown.stderr  # the bar, without --no-progress
