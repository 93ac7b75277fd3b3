"""Reports from records only. Every record and curve here is a TEST FIXTURE, written by
`fake_record` with the real schema (bench/records.py) and made-up numbers; nothing is trained."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import reporting, suites
from bench.cli import main
from bench.errors import UserError
from bench.records import SCHEMA_VERSION, write_record
from bench.runs import write_failed_record

BUDGET = "smoke"


def fake_record(cell: suites.Cell, status: str = "complete", nll: float = 100.0,
                perplexity: float | None = None, updates_per_s: float = 100.0,
                error: str = "") -> dict:
    """A TEST FIXTURE record in the real schema (version 1) for one cell, with made-up numbers."""
    spec = cell.spec
    metric = {"split": "test", "bound": "elbo", "k": spec.eval_samples, "mean": -nll, "nll": nll,
              "num_examples": 200, "update": spec.updates}
    if perplexity is not None:
        metric["perplexity"] = perplexity
    record = {
        "schema_version": SCHEMA_VERSION, "status": status, "run_name": spec.run_name(),
        "config": {"spec": spec.to_dict(), "algorithm": {"name": spec.algorithm, "preset": "",
                                                         "options": {}}},
        "seed": spec.seed, "updates": spec.updates, "epochs": 0.01,
        "best_update": spec.updates, "wall_time_s": 1.0, "train_time_s": 1.0,
        "eval_time_s": 0.1,
        "throughput": {"updates_per_s": updates_per_s, "examples_per_s": updates_per_s * 20,
                       "model_evaluations_per_s": updates_per_s * 20
                       * (2 if spec.algorithm == "wake-sleep" else 1)},
        "metrics": ([{**metric, "split": "valid"}, metric] if status == "complete" else []),
        "code": {"commit": "0" * 40, "dirty": False},
        "environment": {"python": "3.11", "torch": "fixture", "numpy": "fixture",
                        "device": "cpu (fixture)", "threads": 2, "platform": "fixture",
                        "cpu_count": 2},
        "curve": "curve.csv", "best_parameters": None,
    }
    if error:
        record["error"] = error
    return record


def write_fixture(directory, record: dict, curve: list[tuple[int, float]] | None = None) -> None:
    """Write a TEST FIXTURE record (and curve.csv) into a run directory."""
    write_record(directory, record)
    points = curve if curve is not None else [(0, -200.0), (10, -150.0), (20, -120.0)]
    lines = ["update,epoch,valid_bound"] + [f"{u},0,{b!r}" for u, b in points]
    (directory / "curve.csv").write_text("\n".join(lines) + "\n")
    (directory / "best.pt").write_bytes(b"fixture checkpoint: must never be copied")


def cell_dir(tmp_path, suite, cell):
    return reporting.run_dir(tmp_path / "runs", suite, BUDGET, cell)


@pytest.fixture
def table1(tmp_path):
    """Table 1 with TEST FIXTURE records: SBN 200 NVIL on three seeds, SBN 200 WS on one, SBN 500
    NVIL failed, SBN 500 WS diverged, fDARN 500 NVIL with one complete and one failed seed; every
    other cell has no record."""
    suite = suites.load("table1")
    cells = {(c.spec.model, c.spec.algorithm, c.spec.seed): c
             for c in suites.expand(suite, BUDGET, 3)}
    nll = {0: 113.0, 1: 113.4, 2: 113.8}
    for seed, value in nll.items():
        cell = cells[("sbn:200", "nvil", seed)]
        write_fixture(cell_dir(tmp_path, suite, cell),
                      fake_record(cell, nll=value, updates_per_s=100.0 + 10 * seed))
    cell = cells[("sbn:200", "wake-sleep", 0)]
    write_fixture(cell_dir(tmp_path, suite, cell), fake_record(cell, nll=121.0, updates_per_s=160))
    cell = cells[("sbn:500", "nvil", 0)]
    write_failed_record(cell.spec, cell_dir(tmp_path, suite, cell),
                        RuntimeError("fixture failure: out of cheese"))
    cell = cells[("sbn:500", "wake-sleep", 0)]
    write_fixture(cell_dir(tmp_path, suite, cell), fake_record(cell, status="diverged"),
                  [(0, -200.0), (10, float("nan"))])
    cell = cells[("fdarn:500", "nvil", 0)]
    write_fixture(cell_dir(tmp_path, suite, cell), fake_record(cell, nll=91.0))
    cell = cells[("fdarn:500", "nvil", 1)]
    write_failed_record(cell.spec, cell_dir(tmp_path, suite, cell),
                        RuntimeError("fixture failure: seed 1"))
    report = reporting.write_report(suite, BUDGET, tmp_path / "runs", tmp_path / "results",
                                    seeds=3, command="python -m bench report table1 (fixture)")
    return suite, report, tmp_path / "results" / "table1" / BUDGET


def _row(table, model, dim, column):
    rows = table[(table["kind"] == "ours") & (table["model"] == model) & (table["dim"] == dim)
                 & (table["column"] == column)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_mean_spread_and_difference(table1):
    _, _, out = table1
    table = pd.read_csv(out / "table.csv", dtype={"dim": str})
    row = _row(table, "SBN", "200", "NVIL")
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(113.4)
    assert row["std"] == pytest.approx(statistics.stdev([113.0, 113.4, 113.8]))
    assert row["paper"] == pytest.approx(113.1)
    assert row["difference"] == pytest.approx(113.4 - 113.1)
    assert row["display"] == "113.4 ± 0.4 (n=3)"
    ws = _row(table, "SBN", "200", "WS")
    # One seed of three: the mean of what there is, and a note that says the rest did not run.
    assert ws["display"].startswith("121.0 (n=1) [") and math.isnan(ws["std"])
    assert ws["status"] == "partial"
    assert ws["difference"] == pytest.approx(121.0 - 120.8)
    markdown = (out / "table.md").read_text()
    assert "| SBN | 200 | 113.4 ± 0.4 (n=3) | 113.1 | +0.3 | 121.0 (n=1) [" in markdown
    assert "mnist-sbn_200-wake-sleep-s1, mnist-sbn_200-wake-sleep-s2, " in markdown
    assert ": not run" in markdown


def test_failed_diverged_and_not_run_cells_are_named(table1):
    _, report, out = table1
    table = pd.read_csv(out / "table.csv", dtype={"dim": str})
    assert _row(table, "SBN", "500", "NVIL")["status"] == "failed"
    assert _row(table, "SBN", "500", "NVIL")["display"].startswith("failed [")
    assert _row(table, "SBN", "500", "WS")["status"] == "diverged"
    assert _row(table, "SBN", "500", "WS")["display"].startswith("diverged [")
    assert _row(table, "SBN", "200-200", "NVIL")["status"] == "not run"
    assert _row(table, "SBN", "200-200", "NVIL")["display"] == "not run"
    partial = _row(table, "fDARN", "500", "NVIL")
    assert partial["status"] == "partial" and partial["n"] == 1
    assert partial["mean"] == pytest.approx(91.0)
    # Every one of the 14 cells is in the table, whatever its state.
    assert len(table[table["kind"] == "ours"]) == 14
    markdown = (out / "table.md").read_text()
    assert "out of cheese" in markdown and "fixture failure: seed 1" in markdown
    assert "non-finite" in markdown
    assert report.statuses == {"complete": 5, "failed": 2, "diverged": 1, "not run": 34}


def test_literature_rows_are_shown(table1):
    _, _, out = table1
    table = pd.read_csv(out / "table.csv", dtype={"dim": str})
    literature = table[table["kind"] == "literature"]
    assert set(literature["model"]) == {"fDARN", "DARN", "NADE", "RBM (CD3)", "RBM (CD25)", "MoB"}
    assert literature[literature["model"] == "MoB"]["paper"].iloc[0] == pytest.approx(137.6)
    assert "MoB" in (out / "table.md").read_text() and "MoB" in (out / "table.tex").read_text()


def test_headers_state_suite_budget_seeds_bound_and_command(table1):
    _, _, out = table1
    for name in ("table.md", "table.tex", "throughput.md"):
        text = (out / name).read_text()
        assert "table1" in text and "smoke" in text and "30 updates" in text, name
        assert "Seeds: 3" in text, name
        assert "python -m bench report table1 (fixture)" in text, name
    assert "10-sample ELBO" in (out / "table.md").read_text()
    table = pd.read_csv(out / "table.csv")
    assert set(table["seeds"]) == {3} and set(table["budget"]) == {"smoke"}
    assert all("10-sample ELBO" in bound for bound in table["bound"])
    assert set(table["command"]) == {"python -m bench report table1 (fixture)"}


def test_latex_is_a_table(table1):
    _, _, out = table1
    tex = (out / "table.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 1 and tex.count(r"\end{tabular}") == 1
    assert r"113.4 $\pm$ 0.4 (n=3)" in tex
    assert r"Mnih \& Gregor" in tex
    body = tex[tex.index(r"\midrule"):tex.index(r"\bottomrule")]
    widths = {line.count(" & ") for line in body.splitlines() if line.endswith(r"\\")}
    assert widths == {7}  # Model, Dim and three columns for each of NVIL and WS


def test_throughput_table_has_the_numbers(table1):
    _, report, out = table1
    throughput = pd.read_csv(out / "throughput.csv")
    nvil = throughput[(throughput["algorithm"] == "nvil") & (throughput["model"] == "sbn:200")]
    assert nvil["runs"].iloc[0] == 3
    assert nvil["updates_per_s"].iloc[0] == pytest.approx(110.0)
    assert nvil["examples_per_s"].iloc[0] == pytest.approx(2200.0)
    assert nvil["device"].iloc[0] == "cpu (fixture)" and str(nvil["threads"].iloc[0]) == "2"
    assert "| nvil | sbn:200 | factorial | mnist | 3 | 110.0 | 2200 | 2200 |" in (
        out / "throughput.md").read_text()
    # wake-sleep evaluates the model twice per example (wake sample, fantasy)
    sleep = throughput[(throughput["algorithm"] == "wake-sleep") & (throughput["model"] == "sbn:200")]
    assert sleep["model_evaluations_per_s"].iloc[0] == pytest.approx(
        2 * sleep["examples_per_s"].iloc[0])
    assert "110.0" in report.throughput_table()


def test_records_are_copied_without_checkpoints(table1, tmp_path):
    suite, _, out = table1
    copies = sorted(p.parent.name for p in (out / "records").glob("*/record.json"))
    assert "mnist-sbn_200-nvil-s2" in copies and len(copies) == 8
    assert (out / "records" / "mnist-sbn_200-nvil-s0" / "curve.csv").exists()
    assert not list((out / "records").rglob("*.pt"))


def test_report_from_the_results_copies_alone(table1, tmp_path):
    suite, _, out = table1
    before = pd.read_csv(out / "table.csv", dtype={"dim": str})
    report = reporting.write_report(suite, BUDGET, tmp_path / "no-runs-here", tmp_path / "results",
                                    command="python -m bench report table1 (fixture)")
    assert report.table.seeds == 3  # discovered from the copies
    after = pd.read_csv(out / "table.csv", dtype={"dim": str})
    pd.testing.assert_frame_equal(before, after)


def test_table3_reports_perplexity(tmp_path):
    suite = suites.load("table3")
    cells = suites.expand(suite, BUDGET, 1)
    for cell in cells:
        if cell.spec.dataset == "20news":
            write_fixture(cell_dir(tmp_path, suite, cell),
                          fake_record(cell, nll=500.0, perplexity=950.0))
        else:
            write_failed_record(cell.spec, cell_dir(tmp_path, suite, cell),
                                RuntimeError("fixture: no RCV1"))
    reporting.write_report(suite, BUDGET, tmp_path / "runs", tmp_path / "results")
    out = tmp_path / "results" / "table3" / BUDGET
    table = pd.read_csv(out / "table.csv", dtype={"dim": str})
    sbn = _row(table, "SBN", "50", "20 News")
    assert sbn["mean"] == pytest.approx(950.0) and sbn["display"] == "950 (n=1)"
    assert sbn["difference"] == pytest.approx(950.0 - 909)
    reuters = table[(table["kind"] == "ours") & (table["column"] == "Reuters")]
    assert len(reuters) == 3 and set(reuters["status"]) == {"failed"}
    assert "perplexity" in (out / "table.md").read_text()
    literature = table[table["kind"] == "literature"]
    assert {"LDA", "Replicated Softmax", "DocNADE"} <= set(literature["model"])


def test_figure_png_and_data(tmp_path):
    suite = suites.load("figure1")
    cells = suites.expand(suite, BUDGET, 2)
    for index, cell in enumerate(cells):
        if cell.spec.algorithm == "nvil:none" and cell.spec.model == "sbn:200-200":
            continue  # left not run on purpose
        shift = index % 16
        write_fixture(cell_dir(tmp_path, suite, cell), fake_record(cell, nll=120.0 + shift),
                      [(0, -200.0), (10, -150.0 - shift), (20, -130.0 - shift + cell.spec.seed)])
    report = reporting.write_report(suite, BUDGET, tmp_path / "runs", tmp_path / "results",
                                    seeds=2)
    out = tmp_path / "results" / "figure1" / BUDGET
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "figure_seconds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = pd.read_csv(out / "figure.csv")
    assert set(data["panel"]) == {"SBN 200", "SBN 200-200"}
    assert data.groupby("panel")["line"].nunique().to_dict() == {"SBN 200": 8, "SBN 200-200": 7}
    assert len(data) == 3 * (len(cells) - 2)
    assert report.statuses["not run"] == 2
    table = pd.read_csv(out / "table.csv", dtype={"dim": str})
    assert len(table) == 16 and "paper" in table.columns and table["paper"].isna().all()


def test_report_verb(table1, capsys):
    _, _, out = table1
    runs = out.parent.parent.parent / "runs"
    status = main(["report", "table1", "--budget", "smoke", "--runs-dir", str(runs),
                   "--results-dir", str(out.parent.parent)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "113.4 ± 0.4 (n=3)" in printed and "not run" in printed and "110.0" in printed
    assert "python -m bench report table1 --budget smoke --seeds 3" in (out / "table.md").read_text()


def test_report_with_no_records_says_not_run(tmp_path):
    suite = suites.load("quick")
    report = reporting.write_report(suite, BUDGET, tmp_path / "runs", tmp_path / "results")
    table = pd.read_csv(tmp_path / "results" / "quick" / BUDGET / "table.csv")
    assert list(table["display"]) == ["not run", "not run"]
    assert report.throughput == []
    assert (tmp_path / "results" / "quick" / BUDGET / "figure.png").exists()


# What `bench report` must never load. (The suite's cells are still checked against the
# algorithm registry and model parser, so `algorithms` and `models` themselves may be loaded.)
ENGINE_MODULES = ("bench.training", "bench.batched", "bench.runs", "bench.evaluation",
                  "bench.optim")


def _python(code: str) -> str:
    repository = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=repository, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_report_verb_does_not_import_the_training_engine(table1):
    _, _, out = table1
    runs, results = out.parent.parent.parent / "runs", out.parent.parent
    printed = _python(
        "import sys\n"
        "from bench.cli import main\n"
        f"status = main(['report', 'table1', '--budget', 'smoke', '--runs-dir', {str(runs)!r}, "
        f"'--results-dir', {str(results)!r}])\n"
        "assert status == 0, status\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith(('bench.', 'algorithms', "
        "'models'))))\n")
    assert "113.4 ± 0.4 (n=3)" in printed
    loaded = printed.split("LOADED", 1)[1]
    for module in ENGINE_MODULES:
        assert f"'{module}'" not in loaded, module
    assert "'bench.reporting.report'" in loaded and "'bench.layout'" in loaded


def test_training_does_not_import_reporting():
    printed = _python("import sys, bench.training, bench.batched, bench.runs\n"
                      "print(sorted(m for m in sys.modules if m.startswith('bench.')))\n")
    assert "bench.layout" in printed and "bench.reporting" not in printed


def test_a_suite_from_a_file_is_reported_with_its_path(tmp_path, capsys):
    """A suite loaded from a file outside bench/suites/ names that file, and the commands that
    remake its report name it too (not bench/suites/NAME.toml, which does not exist)."""
    path = tmp_path / "elsewhere" / "mine.toml"
    path.parent.mkdir()
    path.write_text((suites.SUITES_DIR / "quick.toml").read_text())
    suite = suites.load(path)
    reporting.write_report(suite, BUDGET, tmp_path / "runs", tmp_path / "results")
    markdown = (tmp_path / "results" / "mine" / BUDGET / "table.md").read_text()
    assert f"file {path}" in markdown and "bench/suites/mine.toml" not in markdown
    assert f"python -m bench report {path} --budget smoke --seeds 1" in markdown
    assert f"python -m bench run {path} --budget smoke --seeds 1" in markdown
    # By name, the suite is reported with its file in bench/suites/, relative to the repository.
    reporting.write_report(suites.load("quick"), BUDGET, tmp_path / "runs", tmp_path / "results")
    markdown = (tmp_path / "results" / "quick" / BUDGET / "table.md").read_text()
    assert "file bench/suites/quick.toml" in markdown
    assert "python -m bench run quick --budget smoke --seeds 1" in markdown


def test_long_budgets_plot_updates_on_a_log_axis(tmp_path, monkeypatch):
    suite = suites.load("figure1")
    assert suite.figure.update_axis == "auto"
    assert suite.figure.log_updates(suite.budget("paper").updates)
    assert not suite.figure.log_updates(suite.budget("short").updates)
    import matplotlib.axes

    scales = []
    original = matplotlib.axes.Axes.set_xscale
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xscale",
                        lambda self, value, **kw: (scales.append(value), original(self, value, **kw)))
    cells = suites.expand(suite, BUDGET, 1)[:2]
    for cell in cells:
        write_fixture(cell_dir(tmp_path, suite, cell), fake_record(cell, nll=120.0),
                      [(0, -200.0), (10_000, -150.0), (2_000_000, -120.0)])
    results = [reporting.read_cell(c, suite, BUDGET, tmp_path / "runs", tmp_path / "results")
               for c in cells]
    from bench.reporting.figure import draw_figure

    bottoms = []
    original_ylim = matplotlib.axes.Axes.set_ylim
    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylim",
                        lambda self, *a, **kw: (bottoms.append(kw.get("bottom")),
                                                original_ylim(self, *a, **kw)))
    draw_figure(suite, results, tmp_path / "log.png", "test", log_updates=True)
    assert scales == ["log"] * len({c.spec.model for c in cells})  # one per panel
    # the untrained model's -200 does not set the scale: the trained curve does
    bottoms = [b for b in bottoms if b is not None]
    assert bottoms and all(-200 < bottom <= -150 for bottom in bottoms)
    assert (tmp_path / "log.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_update_ticks_are_short_and_a_panel_without_curves_says_so(tmp_path, monkeypatch):
    from bench.reporting.figure import draw_figure, update_ticks

    ticks = update_ticks()
    assert [ticks(v) for v in (0, 500, 50_000, 150_000, 1_500_000, 10_000_000)] == [
        "0", "500", "50k", "150k", "1.5M", "10M"]
    import matplotlib.axes

    notes = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda self, x, y, s, **kw: (notes.append(s),
                                                     original(self, x, y, s, **kw))[1])
    suite = suites.load("figure1")
    cells = suites.expand(suite, BUDGET, 1)
    trained = [c for c in cells if c.spec.model == "sbn:200"]
    for cell in trained:
        write_fixture(cell_dir(tmp_path, suite, cell), fake_record(cell, nll=120.0),
                      [(0, -200.0), (10_000, -150.0), (400_000, -120.0)])
    results = [reporting.read_cell(c, suite, BUDGET, tmp_path / "runs", tmp_path / "results")
               for c in cells]
    draw_figure(suite, results, tmp_path / "half.png", "test")
    assert notes == ["no curves yet"]  # the SBN 200-200 panel only


def test_an_unknown_update_axis_is_a_user_error(tmp_path):
    text = suites.load("quick").path.read_text().replace(
        'panels = "model"', 'panels = "model"\nupdate_axis = "cubic"')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match="update_axis 'cubic' unknown; valid: auto, log, linear"):
        suites.load(path)


def test_tables_show_the_importance_sampled_bound_beside_the_papers(tmp_path):
    """A run with test_iw_samples has the tighter bound in its record: the table shows it beside
    the 10-sample ELBO (when every seed has it with the same K) and the CSV keeps both, and the
    updates each seed trained for (a patience stops seeds at different points)."""
    suite = suites.load("quick")
    cells = suites.expand(suite, BUDGET, 2)
    for cell in cells:
        record = fake_record(cell, nll=120.0 + cell.spec.seed)
        if cell.spec.algorithm == "nvil":
            record["metrics"].append({"split": "test", "bound": "iw", "k": 5000, "mean": -110.0,
                                      "nll": 110.0 + cell.spec.seed, "num_examples": 200})
            record["updates"] = 1000 + cell.spec.seed
        write_fixture(cell_dir(tmp_path, suite, cell), record)
    reporting.write_report(suite, BUDGET, tmp_path / "runs", tmp_path / "results", seeds=2)
    out = tmp_path / "results" / "quick" / BUDGET
    markdown = (out / "table.md").read_text()
    assert "120.5 ± 0.7 (n=2); IS K=5,000: 110.5" in markdown
    table = pd.read_csv(out / "table.csv", dtype={"dim": str})
    nvil = _row(table, "SBN", "200", "NVIL")
    assert nvil["importance_sampled"] == pytest.approx(110.5) and nvil["importance_samples"] == 5000
    assert nvil["updates_trained"] == "1000 1001"
    ws = _row(table, "SBN", "200", "WS")
    assert math.isnan(ws["importance_sampled"]) and "IS" not in ws["display"]


def test_seconds_per_update_comes_from_the_record():
    from bench.reporting.figure import seconds_per_update

    cell = suites.expand(suites.load("figure1"), BUDGET)[0]
    assert seconds_per_update(reporting.CellResult(
        cell, "complete", {"train_time_s": 30.0, "updates": 1200})) == 30.0 / 1200
    assert seconds_per_update(reporting.CellResult(cell, "complete", {"updates": 1200})) is None
    assert seconds_per_update(reporting.CellResult(cell, "not run")) is None


PUBLISHED_FIXTURE = """model,dim,column,value,printed,reference,location,binarization,split,evaluated_on,bound,bound_samples,optimizer,steps,train_samples,selection,source
SBN,200,NVIL,112.5,-112.5,Fixture (2018),table 1,not stated,not stated,train,elbo,1,Adam,2M,1,best valid,fixture
SBN,200,VIMCO,100.0,100.0,Fixture (2016),table 2,fixed (Larochelle & Murray 2011),"50,000/10,000/10,000",test,importance-sampled,5000,Adam,1M,5,best valid,fixture
SBN,200,MuProp,111.7,-111.7,Fixture (2018),table 1,fixed,not stated,test,elbo,1,Adam,2M,1,best valid,fixture
"""


def test_published_numbers_are_listed_with_their_protocol_beside_ours(tmp_path):
    """Each published number is set beside the suite's number of the same kind (ELBO against the
    ELBO, importance-sampled against importance-sampled), and called comparable only when it is
    a test-set number on the fixed binarization; a column the suite lacks has no number of ours."""
    suite = suites.load("estimators")
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "estimators.csv").write_text(PUBLISHED_FIXTURE)
    for cell in suites.expand(suite, BUDGET, 1):
        if cell.spec.model == "sbn:200" and cell.spec.algorithm in ("nvil", "vimco"):
            record = fake_record(cell, nll=150.0)
            record["metrics"].append({"split": "test", "bound": "iw", "k": 1000, "mean": -140.0,
                                      "nll": 140.0, "num_examples": 200})
            write_fixture(cell_dir(tmp_path, suite, cell), record)
    reporting.write_report(suite, BUDGET, tmp_path / "runs", tmp_path / "results", seeds=1,
                           paper_dir=tmp_path / "paper")
    out = tmp_path / "results" / "estimators" / BUDGET
    rows = pd.read_csv(out / "published.csv", dtype={"dim": str}).set_index("estimator")
    assert rows.loc["NVIL", "ours"] == pytest.approx(150.0)         # the ELBO beside the ELBO
    assert rows.loc["NVIL", "comparable"].startswith("no: binarization not stated (ours: fixed)")
    assert "training-set" in rows.loc["NVIL", "comparable"]
    assert rows.loc["VIMCO", "ours"] == pytest.approx(140.0)        # IS beside IS
    assert rows.loc["VIMCO", "comparable"] == (
        "yes: same data, split and kind of bound; optimizer and budget differ; "
        "K = 5,000 (ours 1,000)")
    assert math.isnan(rows.loc["MuProp", "ours"])
    markdown = (out / "published.md").read_text()
    assert "| SBN | 200 | MuProp | 111.7 | -111.7 | not in this suite |" in markdown
    assert "Budget: `smoke`" in markdown


def test_a_malformed_published_file_is_one_line(tmp_path):
    from bench.reporting.published import read_published
    (tmp_path / "bad.csv").write_text(PUBLISHED_FIXTURE.replace(",elbo,1,", ",elbo,one,", 1))
    with pytest.raises(UserError, match="line 2 is malformed"):
        read_published("bad", tmp_path)
    (tmp_path / "kind.csv").write_text(PUBLISHED_FIXTURE.replace(",elbo,1,", ",iwae,1,", 1))
    with pytest.raises(UserError, match="bound must be one of elbo, importance-sampled"):
        read_published("kind", tmp_path)


def test_estimates_against_k_come_from_the_records_one_quantity_per_table(tmp_path):
    """A budget's test_sweep gives sweep.md/csv/png: per bound, the mean NLL at each K over
    seeds, the normaliser of p* beside it; a test_iw_samples bound of the same K is not counted
    twice (the sweep's entry, recorded last, is the one)."""
    suite = suites.load("bihm")
    cells = suites.expand(suite, BUDGET, 2)
    assert all(c.spec.test_sweep == (1, 10) for c in cells)
    for cell in cells:
        record = fake_record(cell, nll=300.0)
        seed = cell.spec.seed
        record["metrics"].append({"split": "test", "bound": "iw", "k": 10, "nll": 999.0,
                                  "num_examples": 100, "quantity": "p"})
        for k, nll in ((1, 290.0), (10, 280.0 + seed)):
            record["metrics"].append({"split": "test", "bound": "iw", "k": k, "nll": nll,
                                      "num_examples": 20, "quantity": "p"})
            record["metrics"].append({"split": "test", "bound": "star", "k": k, "nll": nll - 20,
                                      "num_examples": 20, "quantity": "p*", "log_z2": -3.0,
                                      "log_z2_se": 0.1 + seed, "z2_samples": 100_000})
        write_fixture(cell_dir(tmp_path, suite, cell), record)
    reporting.write_report(suite, BUDGET, tmp_path / "runs", tmp_path / "results", seeds=2)
    out = tmp_path / "results" / "bihm" / BUDGET
    rows = pd.read_csv(out / "sweep.csv", dtype={"model": str})
    bihm = rows[(rows.estimator == "BiHM") & (rows.model == "sbn:200-200-200")]
    iw10 = bihm[(bihm.bound == "iw") & (bihm.k == 10)].iloc[0]
    assert iw10.nll == pytest.approx(280.5) and iw10.n == 2      # not 999: the sweep's entry
    star = bihm[(bihm.bound == "star") & (bihm.k == 1)].iloc[0]
    assert star.quantity == "p*" and star.log_z2_se == pytest.approx(1.1)   # the larger error
    markdown = (out / "sweep.md").read_text()
    assert "## log p*(x) = log p̃*(x) - log Ẑ² (model p*)" in markdown
    assert "-3.000 ± 1.100 (100,000)" in markdown
    assert (out / "sweep.png").stat().st_size > 0


def test_a_sweep_of_an_unsampled_bound_is_refused_in_one_line():
    from bench.specs import RunSpec
    with pytest.raises(UserError, match="unknown or unsampled bound.*star-exact"):
        RunSpec(test_sweep=[1, 10], test_sweep_bounds=["iw", "star-exact"])
    assert RunSpec(test_sweep=[1, 10]).test_sweep == (1, 10)
