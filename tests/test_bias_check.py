"""`python -m bench check`: the bias check from the command line.

A few real subprocesses (exit status, stdout/stderr, no traceback), and in-process calls of
`bench.cli.main` for the wiring of the options into `bench.check.run_bias_check`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bench.check
from bench.check import CheckReport, TensorCheck, default_steps_for
from bench.cli import main

# short-run's chains make hundreds of tiny kernel calls per update: one thread (conftest)
pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]


def run_bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------
# subprocesses


def test_check_nvil_finds_no_bias():
    result = run_bench("check", "nvil", "--steps", "300")
    assert result.returncode == 0, result.stderr
    assert "no bias found" in result.stdout
    assert "bias check: nvil on sbn:2-3" in result.stdout
    assert "exact enumeration: 1024 noise configurations of a minibatch of 2" in result.stdout
    assert "Monte Carlo z-test: 300 steps of 10 examples" in result.stdout
    for tensor in ("model.visible.weight", "inference.layers.0.weight", "inference.layers.1.bias"):
        assert tensor in result.stdout
    assert "BIAS" not in result.stdout.replace("no bias", "")
    assert "Traceback" not in result.stderr


def test_check_json_is_parseable():
    result = run_bench("check", "wake-sleep", "--steps", "100", "--json", "--seed", "3")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["biased"] is False
    assert payload["algorithm"] == "wake-sleep" and payload["model"] == "sbn:2-3"
    assert payload["steps"] == 100 and payload["batch_size"] == 10
    groups = {t["group"] for t in payload["tensors"]}
    assert groups == {"model", "inference"}
    for tensor in payload["tensors"]:
        assert tensor["max_abs_z"] <= payload["threshold"]
    # the exact check ran on every tensor and agrees to rounding
    assert payload["exact_skipped"] is None and payload["exact_configurations"] > 1
    assert {t["name"] for t in payload["exact"]} == {t["name"] for t in payload["tensors"]}
    assert max(t["relative_error"] for t in payload["exact"]) < 1e-10


def test_unknown_algorithm_exits_2_listing_valid_names():
    result = run_bench("check", "nosuch")
    assert result.returncode == 2
    assert "unknown algorithm 'nosuch'" in result.stderr
    assert "nvil" in result.stderr and "wake-sleep" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_large_model_exits_2_with_a_clear_message():
    result = run_bench("check", "nvil", "--model", "sbn:200")
    assert result.returncode == 2
    assert "sbn:200" in result.stderr and "20 latent units" in result.stderr
    assert "sbn:2-3" in result.stderr  # suggests a model that works
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------------
# in process


@pytest.mark.parametrize("args, fragments, before_check", [
    (["nvil:bogus"], ["unknown preset 'bogus'", "global-signal", "baseline+idb+vn"], True),
    (["nvil", "--model", "doc-sbn:3"], ["binary model", "doc-sbn:3"], True),
    (["nvil", "--model", "xyz:3"], ["unknown model family 'xyz'", "fdarn", "doc-sbn"], True),
    (["nvil", "--model", "sbn:"], ["malformed model spec"], True),
    (["nvil", "--model", "sbn:11-10"], ["20 latent units"], True),
    (["nvil", "--inference", "recurrent"], ["recurrent", "autoregressive", "factorial"], True),
    (["nvil", "--set", "foo"], ["malformed --set", "key=value"], True),
    (["nvil", "--steps", "1"], ["--steps"], True),
    # option values are checked when the check builds the algorithm (a tiny, fast step)
    (["nvil", "--set", "smoothing=x"], ["smoothing", "float"], False),
    (["nvil", "--set", "smoothnes=0.5"], ["unknown option 'smoothnes'", "smoothing"], False),
    (["wake-sleep", "--set", "local_signals=off"], ["unknown option", "inference_lr_scale"], False),
])
def test_user_errors_exit_2(monkeypatch, capsys, args, fragments, before_check):
    if before_check:
        def fail(*a, **k):
            raise AssertionError("the check ran despite a bad argument")

        monkeypatch.setattr(bench.check, "run_bias_check", fail)
    status = main(["check", *args])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("error: ")
    for fragment in fragments:
        assert fragment in captured.err
    assert captured.out == ""


def test_options_reach_the_check(capsys):
    status = main(["check", "nvil", "--model", "sbn:2-2", "--inference", "autoregressive",
                   "--set", "local_signals=off", "--steps", "30", "--batch-size", "4", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert status == (1 if payload["biased"] else 0)
    assert payload["model"] == "sbn:2-2" and payload["steps"] == 30 and payload["batch_size"] == 4
    names = {t["name"] for t in payload["tensors"]}
    assert "inference.layers.0.autoregressive_weight" in names
    assert "inference.layers.1.autoregressive_weight" in names


def test_a_biased_report_exits_1(monkeypatch, capsys):
    seen = {}

    def biased(algorithm, model, steps, batch_size, seed, overrides, **kwargs):
        seen.update(algorithm=algorithm, model=model, steps=steps, overrides=overrides, **kwargs)
        report = CheckReport(algorithm, model, steps, batch_size, threshold=4.0)
        report.tensors.append(TensorCheck("inference", "inference.layers.0.bias", 3, 9.0, 1.0, 0.5))
        return report

    monkeypatch.setattr(bench.check, "run_bias_check", biased)
    assert main(["check", "nvil:none", "--set", "smoothing=0.5"]) == 1
    out = capsys.readouterr().out
    assert "result: BIASED" in out
    assert "BIAS" in next(line for line in out.splitlines() if "inference.layers.0.bias" in line)
    assert seen["steps"] == default_steps_for("nvil:none") == 4000
    assert seen["overrides"] == {"smoothing": "0.5"}
    assert seen["inference"] == "factorial"
    assert main(["check", "wake-sleep", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["biased"] is True
    assert seen["steps"] == default_steps_for("wake-sleep") == 2000


def test_report_flags_a_non_positive_scale():
    report = CheckReport("nvil", "sbn:2-3", 10, 10, threshold=4.0)
    report.tensors.append(TensorCheck("inference", "w", 1, 0.5, 1.0, 0.0))
    assert not report.biased and report.lines()[-1] == "result: no bias found"
    report.tensors.append(TensorCheck("inference", "b", 1, 0.5, -0.3, 0.0))
    assert report.biased and report.lines()[-1] == "result: BIASED"
