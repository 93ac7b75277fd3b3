"""Suites: the TOML files load, expand into the right cells and budgets, and reject bad input;
the smoke budget of every suite runs end to end through `python -m bench run`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import suites
from bench.cli import main
from bench.errors import UserError

REPOSITORY = Path(__file__).resolve().parent.parent
# The suites that regenerate the paper's tables and figure, and their cells.
EXPECTED_CELLS = {"table1": 14, "table2": 8, "table3": 5, "figure1": 16, "quick": 2}
OTHER_SUITES = {"protocol": 10, "protocol-docs": 12, "protocol-long": 2, "protocol-fast": 2,
                "estimators": 33, "bihm": 6,
                "short-run": 12}
FIGURE1_PRESETS = ["baseline+idb+vn", "baseline+idb", "baseline+vn", "idb+vn", "baseline", "idb",
                   "vn", "none"]


def test_every_suite_is_shipped():
    assert suites.names() == sorted({**EXPECTED_CELLS, **OTHER_SUITES})


@pytest.mark.parametrize("name", sorted(EXPECTED_CELLS))
def test_suite_loads_and_expands(name):
    suite = suites.load(name)
    assert set(suite.budgets) >= {"smoke", "short", "paper"}
    assert suite.default_budget == "short"
    for budget in suite.budgets:
        cells = suites.expand(suite, budget, 1)
        assert len(cells) == EXPECTED_CELLS[name]
        assert all(c.spec.updates == suite.budgets[budget].updates for c in cells)
        assert all(c.spec.seed == 0 for c in cells)
        assert len({c.run_name for c in cells}) == len(cells)
        assert len({c.position for c in cells}) == len(cells)
    smoke = suite.budget("smoke")
    assert smoke.updates == 30
    assert smoke.settings["test_examples"] <= 200 and smoke.settings["eval_examples"] <= 100
    # The paper's rule: the best validation parameters, training stopped by a patience, capped.
    paper = suite.budget("paper")
    assert (paper.updates, paper.settings["patience"]) == (10_000_000, 500_000)
    assert "our choices" in paper.note and "500,000 updates" in paper.describe()
    assert all(c.spec.patience == 500_000 for c in suites.expand(suite, "paper"))
    assert 10_000 <= suite.budget("short").updates < suite.budget("paper").updates


def _pairs(name, first, second):
    return {(getattr(c.spec, first), getattr(c.spec, second))
            for c in suites.expand(suites.load(name), "smoke")}


def test_table1_cells():
    models = ["sbn:200", "sbn:500", "sbn:200-200", "sbn:200-200-200", "sbn:200-200-500",
              "fdarn:200", "fdarn:500"]
    assert _pairs("table1", "model", "algorithm") == {(m, a) for m in models
                                                     for a in ("nvil", "wake-sleep")}
    cells = suites.expand(suites.load("table1"), "short")
    assert {c.spec.dataset for c in cells} == {"mnist"}
    assert {c.spec.inference for c in cells} == {"factorial"}


def test_table2_cells():
    models = ["sbn:200", "sbn:500", "sbn:200-200-200", "sbn:200-200-500"]
    assert _pairs("table2", "model", "inference") == {(m, i) for m in models
                                                     for i in ("autoregressive", "factorial")}
    assert {c.spec.algorithm for c in suites.expand(suites.load("table2"))} == {"nvil"}


def test_table3_cells():
    assert _pairs("table3", "model", "dataset") == {
        ("doc-sbn:50", "20news"), ("doc-sbn:50", "rcv1"), ("doc-fdarn:50", "20news"),
        ("doc-fdarn:50", "rcv1"), ("doc-fdarn:200", "rcv1")}
    suite = suites.load("table3")
    assert suite.table.metric == "perplexity"
    assert {c.spec.algorithm for c in suites.expand(suite)} == {"nvil"}


def test_figure1_cells():
    expected = {(m, f"nvil:{p}") for m in ("sbn:200", "sbn:200-200") for p in FIGURE1_PRESETS}
    assert _pairs("figure1", "model", "algorithm") == expected
    suite = suites.load("figure1")
    assert suite.figure is not None and suite.figure.panels == "model"


def test_quick_cells_and_budget():
    suite = suites.load("quick")
    assert _pairs("quick", "model", "algorithm") == {("sbn:200", "nvil"), ("sbn:200", "wake-sleep")}
    # Sized for about ten minutes on 2 idle cores, where SBN 200 trained at about 265 updates/s
    # with NVIL and 374 with wake-sleep (plus about 10 s of start-up and evaluation).
    updates = suite.budget("short").updates
    minutes = (updates / 265 + updates / 374 + 10) / 60
    assert 7 <= minutes <= 11


def test_protocol_cells_are_indexed_by_label():
    suite = suites.load("protocol")
    cells = suites.expand(suite, "probe")
    assert len(cells) == OTHER_SUITES["protocol"]
    assert {c.row for c in cells} == {"SGD 3e-4 (paper)", "SGD 1e-3", "SGD 3e-3", "Adam 3e-4",
                                      "Adam 1e-3"}
    assert {c.column for c in cells} == {"nvil", "nvil:baseline+idb"}
    by_name = {c.run_name: c for c in cells}
    adam = by_name["mnist-sbn_200-nvil-s0-lr=0.001-opt=adam"]
    assert (adam.spec.optimizer, adam.spec.learning_rate, adam.label) == ("adam", 1e-3, "Adam 1e-3")
    # The label names cells; it is neither a run setting nor an algorithm option.
    assert all("label" not in c.spec.options for c in cells)
    assert by_name["mnist-sbn_200-nvil-s0-lr=0.0003"].index("label") == "SGD 3e-4 (paper)"


def test_run_names_tell_apart_what_a_suite_varies():
    base = suites.RunSpec(algorithm="nvil")
    assert suites.run_name(base) == base.run_name()  # the defaults add nothing
    names = {suites.run_name(suites.RunSpec(algorithm="nvil", **change)) for change in
             ({"learning_rate": 1e-3}, {"optimizer": "adam"}, {"init_scale": 0.01},
              {"learning_rate": 1e-3, "optimizer": "adam"})}
    assert len(names) == 4 and base.run_name() not in names


def test_seeds_repeat_every_cell():
    suite = suites.load("table1")
    one, two = suites.expand(suite, "smoke", 1), suites.expand(suite, "smoke", 2)
    assert len(two) == 2 * len(one)
    assert [c.spec.seed for c in two] == [0] * len(one) + [1] * len(one)
    assert [c.spec.model for c in two[len(one):]] == [c.spec.model for c in one]
    assert len({c.run_name for c in two}) == len(two)
    with pytest.raises(UserError, match="seeds"):
        suites.expand(suite, "smoke", 0)


def test_overrides_reach_every_cell():
    cells = suites.expand(suites.load("quick"), "smoke", 1, {"device": "cuda"})
    assert {c.spec.device for c in cells} == {"cuda"}


def test_unknown_suite_lists_the_valid_ones():
    with pytest.raises(UserError, match="unknown suite 'nosuch'.*quick.*table1"):
        suites.load("nosuch")


def test_unknown_budget_lists_the_valid_ones():
    suite = suites.load("quick")
    with pytest.raises(UserError, match="unknown budget 'huge'.*paper, short, smoke"):
        suite.budget("huge")
    with pytest.raises(UserError, match="unknown budget"):
        suites.expand(suite, "huge")


def test_cli_reports_unknown_names(capsys, tmp_path):
    assert main(["run", "nosuch", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown suite 'nosuch'" in capsys.readouterr().err
    assert main(["report", "quick", "--budget", "huge", "--results-dir", str(tmp_path)]) == 2
    assert "unknown budget 'huge'" in capsys.readouterr().err


# -- malformed suite files (test fixtures written to tmp files) ---------------------------------

GOOD = """
[suite]
title = "test fixture"
[defaults]
dataset = "synthetic"
[[cells]]
model = ["sbn:4-8"]
algorithm = ["nvil", "wake-sleep"]
[table]
rows = "model"
columns = "algorithm"
[budgets.smoke]
updates = 5
eval_interval = 5
"""


def write_suite(tmp_path, text, name="fixture.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_fixture_loads(tmp_path):
    suite = suites.load(write_suite(tmp_path, GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"')))
    assert len(suites.expand(suite)) == 2


def test_a_matched_evaluations_budget_divides_each_cell_by_its_estimator_cost(tmp_path):
    """With match_evaluations the budget counts model evaluations per example: NVIL (one per
    example) trains the budget's updates, wake-sleep (two) half of them, ARM on a two-layer SBN
    (the trajectory and one antithetic branch per layer: three) a third; the validation interval
    and the patience follow."""
    text = GOOD.replace('[suite]', '[suite]\ndefault_budget = "matched"').replace(
        'algorithm = ["nvil", "wake-sleep"]', 'algorithm = ["nvil", "wake-sleep", "arm"]') + (
        "[budgets.matched]\nupdates = 600\neval_interval = 60\npatience = 120\n"
        "match_evaluations = true\n")
    suite = suites.load(write_suite(tmp_path, text))
    budget = suite.budget("matched")
    assert budget.match_evaluations and not suite.budget("smoke").match_evaluations
    assert "600 model evaluations per example" in budget.describe()
    trained = {c.spec.algorithm: (c.spec.updates, c.spec.eval_interval, c.spec.patience)
               for c in suites.expand(suite)}
    assert trained == {"nvil": (600, 60, 120), "wake-sleep": (300, 30, 60), "arm": (200, 20, 40)}
    assert all(c.spec.updates == 5 for c in suites.expand(suite, "smoke"))
    with pytest.raises(UserError, match="match_evaluations must be true or false"):
        suites.load(write_suite(tmp_path, text.replace("match_evaluations = true",
                                                       'match_evaluations = "yes"')))


@pytest.mark.parametrize("text, problem", [
    ("[suite\ntitle = 1", "not valid TOML"),
    (GOOD + "\n[extra]\nx = 1\n", "unknown section"),
    (GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"').replace(
        'model = ["sbn:4-8"]', 'model = ["sbn:4-8"]\nupdates = 10'), "budget sets updates"),
    (GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"').replace(
        'rows = "model"', 'rows = "model"\nmetric = "accuracy"'), "metric 'accuracy' unknown"),
    (GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"').replace(
        'rows = "model"', 'rows = "colour"'), "rows must name one of"),
    (GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"').replace(
        'model = ["sbn:4-8"]', 'model = ["sbn:4-8"]\nlabel = ["a", "b"]'), "label must be one string"),
    (GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"').replace(
        'algorithm = ["nvil", "wake-sleep"]', 'algorithm = ["nvil"]\nsmoothnes = 0.9'),
     "unknown option 'smoothnes'"),
    (GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"').replace(
        'algorithm = ["nvil", "wake-sleep"]', 'algorithm = ["nvil"]\nsmoothing = [0.8, 0.9]'),
     "share the table position"),
    (GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"').replace(
        'model = ["sbn:4-8"]', 'model = ["sbn:four"]'), "malformed model spec"),
    (GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"').replace(
        'updates = 5', 'updates = "five"'), "should be int"),
    (GOOD, "default_budget 'short' is not one of its budgets"),
    (GOOD.replace('[[cells]]\nmodel = ["sbn:4-8"]\nalgorithm = ["nvil", "wake-sleep"]\n', ''),
     "at least one \\[\\[cells\\]\\]"),
])
def test_malformed_suite_files_are_user_errors_naming_the_file(tmp_path, text, problem):
    path = write_suite(tmp_path, text)
    with pytest.raises(UserError, match=problem) as raised:
        suites.load(path)
    assert str(path) in str(raised.value)


# -- the smoke budget of every suite, end to end ---------------------------------------------

SMOKE_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    mirror = os.environ.get("BENCH_DATA_MIRROR")
    if not mirror or not os.path.isdir(mirror):
        pytest.skip("the end-to-end smoke runs need the MNIST and 20news data: set "
                    "BENCH_DATA_MIRROR to a directory laid out like shared/data")
    env = dict(os.environ)
    # One data root for every suite so each dataset is converted once per test session.
    env.setdefault("BENCH_DATA", str(tmp_path_factory.mktemp("bench-data")))
    return env, tmp_path_factory.mktemp("smoke")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quick", "table1", "table2", "table3", "figure1"])
def test_smoke_budget_runs_end_to_end(smoke_env, name):
    env, root = smoke_env
    runs, results = root / "runs", root / "results"
    started = time.perf_counter()
    # quick trains its cells in this process, the others in two worker processes (--jobs 2).
    jobs = "1" if name == "quick" else "2"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "run", name, "--budget", "smoke", "--no-progress",
         "--jobs", jobs, "--runs-dir", str(runs), "--results-dir", str(results)],
        cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=600)
    SMOKE_SECONDS[name] = time.perf_counter() - started
    print(f"smoke {name}: {SMOKE_SECONDS[name]:.1f} s")
    output = completed.stdout + completed.stderr
    assert "Traceback" not in output, output
    out = results / name / "smoke"
    for file in ("table.md", "table.csv", "table.tex", "throughput.md", "throughput.csv"):
        assert (out / file).stat().st_size > 0, file
    table = pd.read_csv(out / "table.csv", dtype={"dim": str})
    ours = table[table["kind"] == "ours"]
    assert len(ours) == EXPECTED_CELLS[name]
    assert (table["budget"] == "smoke").all() and (table["updates"] == 30).all()
    throughput = pd.read_csv(out / "throughput.csv")
    assert (throughput["updates_per_s"] > 0).all()
    if name == "table3":
        # No RCV1 in CI: its cells must show as failed, never silently missing.
        reuters = ours[ours["column"] == "Reuters"]
        assert len(reuters) == 3
        assert (reuters["status"] == "failed").all()
        assert (ours[ours["column"] == "20 News"]["status"] == "complete").all()
        assert "failed [" in (out / "table.md").read_text()
        # the sanity row: a unigram model of the training documents (no RCV1 here either)
        unigram = table[table["kind"] == "reference"].set_index("column")
        assert unigram.loc["20 News", "status"] == "complete"
        assert 1000 < unigram.loc["20 News", "mean"] < 1500
        assert unigram.loc["Reuters", "status"] == "failed"
        assert completed.returncode == 1, output  # some cells did not complete
    else:
        assert completed.returncode == 0, output
        assert (ours["status"] == "complete").all()
        assert len(throughput) == EXPECTED_CELLS[name]
    assert "Throughput" in completed.stdout and "| Model | Dim |" in completed.stdout
    assert f"`python -m bench run {name} --budget smoke --seeds 1" in (out / "table.md").read_text()
    records = list((out / "records").glob("*/record.json"))
    assert len(records) == EXPECTED_CELLS[name] + len(suites.load(name).references)
    assert not list((out / "records").rglob("*.pt"))
    if name in ("quick", "figure1"):
        assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(pd.read_csv(out / "figure.csv")) > 0
    if name == "quick":  # a second run finds every cell done and trains nothing
        again = subprocess.run(
            [sys.executable, "-m", "bench", "run", name, "--budget", "smoke", "--no-progress",
             "--runs-dir", str(runs), "--results-dir", str(results)],
            cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=600)
        assert "2 already done, 0 to run" in again.stdout, again.stdout + again.stderr
        assert again.returncode == 0


@pytest.mark.slow
def test_protocol_smoke_run_tables_and_plots_by_label(smoke_env):
    env, root = smoke_env
    results = root / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "run", "protocol", "--budget", "smoke", "--no-progress",
         "--runs-dir", str(root / "runs"), "--results-dir", str(results)],
        cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=600)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0 and "Traceback" not in output, output
    assert "training 6 runs as one stacked computation" in output   # the SGD cells
    assert "training 4 runs as one stacked computation" in output   # the Adam cells
    table = (results / "protocol" / "smoke" / "table.md").read_text()
    assert "| Label | NVIL | NVIL without VN |" in table
    assert "| Adam 1e-3 |" in table and "| SGD 3e-4 (paper) |" in table
    figure = pd.read_csv(results / "protocol" / "smoke" / "figure.csv")
    assert set(figure["line"]) == {"SGD 3e-4 (paper)", "SGD 1e-3", "SGD 3e-3", "Adam 3e-4",
                                   "Adam 1e-3"}
    assert set(figure["panel"]) == {"NVIL", "NVIL without VN"}


def test_protocol_docs_cells_stack_by_initial_scale():
    from bench.batched import stacked_groups

    cells = suites.expand(suites.load("protocol-docs"), "short")
    assert len(cells) == OTHER_SUITES["protocol-docs"]
    assert {c.row for c in cells} == {"SGD 3e-5 (paper)", "SGD 1e-4", "SGD 3e-4", "SGD 1e-3",
                                      "SGD 3e-4, init 0.01", "SGD 1e-3, init 0.01"}
    # one group per initial scale
    assert stacked_groups([c.spec for c in cells], 16) == [list(range(10)), [10, 11]]


def test_run_k_sets_the_importance_sampled_test_bound_of_every_cell(tmp_path, capsys):
    """`bench run --k K` evaluates every cell's test set also with the K-sample importance-sampled
    bound, records K, and the command written into the report names it."""
    import json

    path = write_suite(tmp_path, GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"'))
    status = main(["run", str(path), "--k", "7", "--no-progress", "--jobs", "1",
                   "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "out")])
    assert status == 0, capsys.readouterr()
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("record.json")]
    assert len(records) == 2
    for record in records:
        assert record["config"]["spec"]["test_iw_samples"] == 7
        assert "iw" in json.dumps(record["metrics"])
    assert "--k 7" in (tmp_path / "out" / "fixture" / "smoke" / "table.md").read_text()
    assert main(["run", str(path), "--k", "-1"]) == 2
    assert "--k must be 0" in capsys.readouterr().err


def test_records_committed_with_the_report_count_as_done(tmp_path, capsys):
    """A cell whose complete record lies in the report's records/ (committed; its run directory
    and checkpoints gone, as on a fresh machine) is not trained again; the others are."""
    import shutil

    path = write_suite(tmp_path, GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"'))
    arguments = ["run", str(path), "--no-progress", "--jobs", "1", "--runs-dir",
                 str(tmp_path / "runs"), "--results-dir", str(tmp_path / "out")]
    assert main(arguments) == 0
    copies = tmp_path / "out" / "fixture" / "smoke" / "records"
    [kept, dropped] = sorted(copies.iterdir())
    shutil.rmtree(tmp_path / "runs")
    shutil.rmtree(dropped)
    capsys.readouterr()
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "2 cells, 1 already done, 1 to run" in out
    assert not (tmp_path / "runs" / "fixture" / "smoke" / kept.name).exists()
    assert (tmp_path / "runs" / "fixture" / "smoke" / dropped.name / "record.json").exists()
    assert (kept / "record.json").exists() and (dropped / "record.json").exists()


def test_the_estimators_suite_compares_at_matched_updates_and_matched_evaluations():
    suite = suites.load("estimators")
    models = {c.spec.model for c in suites.expand(suite, "short")}
    assert models == {"sbn:200", "sbn:200-200", "nsbn:200"}
    assert all(c.spec.updates == 10_000 for c in suites.expand(suite, "short"))
    matched = {(c.spec.algorithm, c.spec.model): c.spec.updates
               for c in suites.expand(suite, "short-matched")}
    assert matched[("nvil", "sbn:200")] == matched[("reinforce", "sbn:200")] == 10_000
    assert matched[("wake-sleep", "sbn:200")] == 5_000
    assert matched[("vimco", "sbn:200")] == 2_000                  # K = 5
    assert matched[("rloo", "sbn:200")] == 2_500                   # K = 4
    assert matched[("arm", "sbn:200-200")] == round(10_000 / 3)   # trajectory + 2 branches
    assert all(c.spec.test_iw_samples == 1_000 for c in suites.expand(suite, "short"))


TWO_SEEDS_SUITE = """
[suite]
title = "Seeds found"
default_budget = "tiny"

[defaults]
dataset = "synthetic"
model = "sbn:4-8"

[[cells]]
algorithm = "nvil"

[table]
metric = "nll"
rows = "model"
columns = "algorithm"

[budgets.tiny]
updates = 20
eval_interval = 10
eval_examples = 50
test_examples = 50
"""


def test_run_without_seeds_takes_as_many_seeds_as_have_records(tmp_path):
    suite = tmp_path / "seeds.toml"
    suite.write_text(TWO_SEEDS_SUITE)
    command = [sys.executable, "-m", "bench", "run", str(suite), "--runs-dir",
               str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
               "--no-progress", "--threads", "1"]
    fresh = subprocess.run(command + ["--seeds", "2"], cwd=REPOSITORY, capture_output=True,
                           text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    again = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "seeds 2: 2 cells, 2 already done, 0 to run" in again.stdout, again.stdout
    assert "(n=2)" in (tmp_path / "results" / "seeds" / "tiny" / "table.md").read_text()
    # with no records at all, one seed
    empty = subprocess.run(command[:6] + [str(tmp_path / "other"), "--results-dir",
                                           str(tmp_path / "other-results"), "--no-progress",
                                           "--threads", "1"],
                           cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert "seeds 1: 1 cells, 0 already done, 1 to run" in empty.stdout, empty.stdout


def carry_suite(tmp_path, extra: str = "") -> list[str]:
    """`bench run` arguments for TWO_SEEDS_SUITE with a second budget `longer` of twice the
    updates (plus `extra` settings), in tmp_path."""
    suite = tmp_path / "carry.toml"
    suite.write_text(TWO_SEEDS_SUITE + "\n[budgets.longer]\nupdates = 40\neval_interval = 10\n"
                     f"eval_examples = 50\ntest_examples = 50\n{extra}\n")
    return ["run", str(suite), "--no-progress", "--jobs", "1", "--runs-dir",
            str(tmp_path / "runs"), "--results-dir", str(tmp_path / "out")]


def test_a_run_carried_on_to_a_larger_budget_is_extended_not_counted_done(tmp_path, capsys):
    """A run directory of a smaller budget copied under a larger one (the way a session run is
    carried on to `long`) holds a complete record of fewer updates: the larger budget trains it on
    from its checkpoint to the new cap, and its record says so."""
    import json
    import shutil

    arguments = carry_suite(tmp_path)
    assert main(arguments) == 0
    [short] = (tmp_path / "runs" / "carry" / "tiny").iterdir()
    curve_before = (short / "curve.csv").read_text()
    shutil.copytree(short, tmp_path / "runs" / "carry" / "longer" / short.name)
    capsys.readouterr()
    assert main(arguments + ["--budget", "longer"]) == 0
    assert "1 cells, 0 already done, 1 to run" in capsys.readouterr().out
    record = json.loads((tmp_path / "runs" / "carry" / "longer" / short.name
                         / "record.json").read_text())
    assert record["status"] == "complete" and record["updates"] == 40
    curve = (tmp_path / "runs" / "carry" / "longer" / short.name / "curve.csv").read_text()
    assert curve.startswith(curve_before.strip())  # carried on, not restarted
    assert main(arguments + ["--budget", "longer"]) == 0
    assert "1 cells, 1 already done, 0 to run" in capsys.readouterr().out


def test_a_budget_sets_options_for_one_algorithm_by_name(tmp_path):
    """`algorithm_options` reaches the cells of the named algorithm only, over their own options;
    the run name says so, so the budget's runs never mix with the paper protocol's."""
    text = GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"') + (
        "[budgets.fast]\nupdates = 5\neval_interval = 5\nlearning_rate = 1e-3\n"
        "algorithm_options = { nvil = { variance_normalisation = false } }\n")
    suite = suites.load(write_suite(tmp_path, text))
    fast = {c.spec.algorithm: c for c in suites.expand(suite, "fast")}
    assert fast["nvil"].spec.options == {"variance_normalisation": False}
    assert fast["wake-sleep"].spec.options == {}
    assert all(c.spec.learning_rate == 1e-3 for c in fast.values())
    assert "variance_normalisation=False" in fast["nvil"].run_name
    assert all(c.spec.options == {} for c in suites.expand(suite, "smoke"))
    # the paper's table1 offers the fast protocol under its own names
    table1 = {c.spec.algorithm: c.spec for c in suites.expand(suites.load("table1"), "fast")}
    assert table1["nvil"].options == {"variance_normalisation": False}
    assert table1["nvil"].resolved_learning_rate == table1["wake-sleep"].resolved_learning_rate
    # and Table 2 under the same protocol: its factorial SBN 200 cell is Table 1's NVIL one
    table2 = {(c.spec.model, c.spec.inference): c for c in suites.expand(suites.load("table2"),
                                                                          "fast")}
    table1_cells = {(c.spec.model, c.spec.algorithm): c
                    for c in suites.expand(suites.load("table1"), "fast")}
    assert (table2[("sbn:200", "factorial")].run_name
            == table1_cells[("sbn:200", "nvil")].run_name)
    assert table2[("sbn:200", "autoregressive")].spec.options == {"variance_normalisation": False}


@pytest.mark.parametrize("setting, problem", [
    ("algorithm_options = { nvill = { smoothing = 0.5 } }", "unknown algorithm 'nvill'"),
    ("algorithm_options = { nvil = { smoothnes = 0.5 } }", "unknown option 'smoothnes'"),
    ("algorithm_options = { nvil = 3 }", "algorithm_options must be a table"),
    ('continues = "huge"', "continues = 'huge' names no other budget"),
    ('continues = "fast"', "continues = 'fast' names no other budget"),
])
def test_bad_budget_options_and_continues_are_user_errors(tmp_path, setting, problem):
    text = GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"') + (
        f"[budgets.fast]\nupdates = 5\neval_interval = 5\n{setting}\n")
    with pytest.raises(UserError, match=problem):
        suites.expand(suites.load(write_suite(tmp_path, text)), "fast")


def test_only_trains_the_chosen_cells_and_the_report_shows_the_rest_as_not_run(tmp_path, capsys):
    path = write_suite(tmp_path, GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"'))
    arguments = ["run", str(path), "--no-progress", "--jobs", "1", "--runs-dir",
                 str(tmp_path / "runs"), "--results-dir", str(tmp_path / "out")]
    assert main(arguments + ["--only", "algorithm=wake-sleep"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 cells chosen by --only, 0 already done, 1 to run" in out
    trained = sorted(p.name for p in (tmp_path / "runs" / "fixture" / "smoke").iterdir())
    assert trained == ["synthetic-sbn_4-8-wake-sleep-s0"]
    table = (tmp_path / "out" / "fixture" / "smoke" / "table.md").read_text()
    assert "not run" in table and "--only algorithm=wake-sleep" in table
    assert main(arguments + ["--only", "model=sbn:4-8", "--only", "algorithm=nvil,wake-sleep"]) == 0
    assert "2 of 2 cells chosen by --only, 1 already done, 1 to run" in capsys.readouterr().out
    for only, problem in (("colour=red", "unknown --only field 'colour'"),
                          ("algorithm=vimco", "unknown algorithm in --only 'vimco'; valid "
                                              "algorithm values of the suite's cells: nvil, "
                                              "wake-sleep"),
                          ("algorithm", "write FIELD=VALUE")):
        assert main(arguments + ["--only", only]) == 2
        assert problem in capsys.readouterr().err


def test_a_continuing_budget_carries_on_the_other_budgets_finished_runs(tmp_path, capsys):
    """`continues`: a cell with no run directory under the larger budget starts from the finished
    run of the named budget (its curve goes on), and takes that budget's seeds."""
    import json

    arguments = carry_suite(tmp_path, 'continues = "tiny"')
    assert main(arguments + ["--seeds", "2"]) == 0
    tiny = tmp_path / "runs" / "carry" / "tiny"
    curves = {d.name: (d / "curve.csv").read_text() for d in tiny.iterdir()}
    capsys.readouterr()
    assert main(arguments + ["--budget", "longer"]) == 0
    out = capsys.readouterr().out
    assert "2 cells carried on from budget tiny's runs" in out
    assert "seeds 2: 2 cells, 0 already done, 2 to run" in out
    for name, before in curves.items():
        longer = tmp_path / "runs" / "carry" / "longer" / name
        assert json.loads((longer / "record.json").read_text())["updates"] == 40
        assert (longer / "curve.csv").read_text().startswith(before.strip())
        assert not list(longer.parent.glob("*.copying"))
    # the smaller budget's runs are untouched
    assert all(json.loads((d / "record.json").read_text())["updates"] == 20 for d in tiny.iterdir())


def test_only_dataset_also_chooses_the_reference_rows(tmp_path, capsys):
    """`--only dataset=X` fits only the sanity rows of dataset X: a reference on a dataset not
    chosen (here RCV1, whose data a machine may lack) is not attempted."""
    text = GOOD.replace('[suite]', '[suite]\ndefault_budget = "smoke"') + (
        '[[references]]\nname = "unigram"\ndataset = "rcv1"\nlabel = "Unigram"\n')
    path = write_suite(tmp_path, text)
    arguments = ["run", str(path), "--no-progress", "--jobs", "1", "--runs-dir",
                 str(tmp_path / "runs"), "--results-dir", str(tmp_path / "out"),
                 "--data-dir", str(tmp_path / "no-data")]
    assert main(arguments + ["--only", "dataset=synthetic", "--only", "algorithm=nvil"]) == 0
    assert "reference rcv1-reference-unigram:" not in capsys.readouterr().out
    assert not (tmp_path / "runs" / "fixture" / "smoke" / "rcv1-reference-unigram").exists()
