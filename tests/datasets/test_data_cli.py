"""`python -m bench data ...`: exit codes, messages, and output on fake data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dataset_fakes import write_mirror

import bench.cli
import datasets
from bench.verbs import data as data_verb

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """bench.cli.main with only the data verb registered; returns (status, stdout, stderr)."""
    monkeypatch.setattr(bench.cli, "VERB_MODULES", ["bench.verbs.data"])

    def run(*argv):
        status = bench.cli.main(list(argv))
        captured = capsys.readouterr()
        return status, captured.out, captured.err
    return run


@pytest.fixture
def fake_mirror(tmp_path, use_mirror, fake_mnist, fake_20news):
    files = {**fake_mnist.mirror_files(),
             **{f"20news/{name}": payload for name, payload in fake_20news.files.items()}}
    return use_mirror(write_mirror(tmp_path / "mirror", files, gzipped=True))


def test_unknown_dataset_through_python_dash_m(tmp_path):
    # The real entry point, in a subprocess: one line on stderr, exit status 2, no traceback.
    env = {**os.environ, "BENCH_DATA": str(tmp_path / "root")}
    env.pop("BENCH_DATA_MIRROR", None)
    result = subprocess.run([sys.executable, "-m", "bench", "data", "info", "foo"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: unknown dataset 'foo'; valid datasets: 20news, mnist, rcv1, synthetic")
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("argv", [
    ("data", "info", "foo"), ("data", "fetch", "mnist", "foo"), ("data", "verify", "foo"),
])
def test_unknown_dataset_exits_2(run_cli, argv):
    status, out, err = run_cli(*argv)
    assert status == 2
    assert "error: unknown dataset 'foo'; valid datasets: 20news, mnist, rcv1, synthetic" in err
    assert "Traceback" not in err


def test_unknown_split_exits_2(run_cli):
    status, _, err = run_cli("data", "info", "mnist", "--split", "tiny")
    assert status == 2
    assert err.strip() == "error: unknown split 'tiny'; valid splits: paper, standard"


def test_help_lists_the_registered_datasets():
    assert list(data_verb.DATASET_NAMES) == datasets.names()
    assert list(data_verb.FETCHABLE_NAMES) == datasets.fetchable_names()


def test_info_binary(run_cli, fake_mirror, fake_mnist):
    status, out, _ = run_cli("data", "info", "mnist", "--split", "standard")
    assert status == 0
    assert "mnist, split 'standard' (binary, 784 features)" in out
    train_line = next(line for line in out.splitlines() if line.startswith("train"))
    assert train_line.split() == ["train", "90", "784", f"{fake_mnist.images['train'].mean():.5f}"]


def test_info_counts_as_json(run_cli, fake_mirror, fake_20news):
    status, out, _ = run_cli("data", "info", "20news", "--json")
    assert status == 0
    report = json.loads(out)
    assert report["kind"] == "counts" and report["vocab_size"] == 30
    assert report["parts"]["test"]["total_words"] == int(fake_20news.test.sum())
    assert report["parts"]["train"]["rows"] + report["parts"]["valid"]["rows"] == 130
    assert set(report["provenance"]["raw_files"]) == {"train.feat", "test.feat", "vocab.new"}


def test_fetch_all_reports_rcv1_and_fetches_the_rest(run_cli, fake_mirror, data_root):
    status, out, err = run_cli("data", "fetch", "--data-dir", str(data_root / "explicit"))
    assert status == 0
    assert "mnist: 3 raw file(s) verified" in out and "20news: 3 raw file(s) verified" in out
    assert "error: rcv1:" in err and "failed: rcv1" in err
    assert (data_root / "explicit" / "binarized_mnist" / "binarized_mnist_test.amat").is_file()
    assert any((data_root / "explicit" / "processed").glob("mnist-standard-v1-*.npz"))


def test_fetch_named_dataset_that_fails_exits_2(run_cli, fake_mirror):
    status, _, err = run_cli("data", "fetch", "rcv1")
    assert status == 2
    assert "not found in the mirror" in err and "Traceback" not in err


def test_fetch_without_network_or_mirror(run_cli, fake_web, fake_mnist):
    status, _, err = run_cli("data", "fetch", "mnist")
    assert status == 2
    assert "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/" in err
    assert "raw.githubusercontent.com/mingzhang-yin/ARM-gradient" in err
    assert "BENCH_DATA_MIRROR" in err and "Traceback" not in err


def test_fetch_all_exits_2_on_a_corrupt_file(run_cli, fake_mirror, data_root):
    raw = data_root / "binarized_mnist" / "binarized_mnist_train.amat"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"0 1\n")
    status, out, err = run_cli("data", "fetch")
    assert status == 2
    assert str(raw) in err and "python -m bench data fetch mnist" in err
    assert "20news: 3 raw file(s) verified" in out
    assert raw.read_bytes() == b"0 1\n"


def test_verify_reports_ok_mismatch_missing(run_cli, fake_mirror, data_root):
    assert run_cli("data", "fetch", "mnist", "20news")[0] == 0
    status, out, _ = run_cli("data", "verify", "mnist", "20news")
    assert status == 0
    assert out.count("OK") == 6

    raw = data_root / "20news" / "test.feat"
    raw.write_bytes(raw.read_bytes() + b"1 1:1\n")
    (data_root / "binarized_mnist" / "binarized_mnist_valid.amat").unlink()
    status, out, _ = run_cli("data", "verify")
    assert status == 1
    assert f"MISMATCH  20news    {raw}" in out and "actual   sha256" in out
    assert "MISSING   mnist" in out
    assert "MISSING   rcv1" in out


def test_verify_missing_only_fails_when_named(run_cli):
    assert run_cli("data", "verify")[0] == 0
    status, out, _ = run_cli("data", "verify", "mnist")
    assert status == 1 and out.count("MISSING") == 3


def test_data_without_action_prints_help(run_cli):
    status, _, err = run_cli("data")
    assert status == 2 and "fetch" in err and "verify" in err and "info" in err
