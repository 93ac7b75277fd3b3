"""Tables and figures of a suite, made from its records only.

`write_report(suite, budget, runs_dir, results_dir)` reads the record (and curve) of every cell of
the suite, from `<runs_dir>/<suite>/<budget>/<run name>/` or, where a run directory has none, from
the copy kept in `<results_dir>/<suite>/<budget>/records/<run name>/` (so results/ alone can remake
its tables), and writes to `<results_dir>/<suite>/<budget>/`:

    table.md, table.csv, table.tex   the suite's table: mean ± sample standard deviation over seeds,
                                     the paper's number and the difference (ours - paper), the
                                     paper's literature rows; failed / diverged / not run cells
                                     named as such, with the reason in a note
    throughput.md, throughput.csv    updates/s and examples/s per algorithm and model
    figure.png, figure.csv           the validation bound against updates (suites with [figure])
    records/<run name>/              a copy of each record.json and curve.csv (never checkpoints)

Every file states the suite, the budget, the number of seeds, the bound and the command.
The CSV files are tidy (one row per table cell) and carry the same statement in their columns.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UserError
from bench.io import atomic_write_text
from bench.records import RECORD, find_metric, read_record
from bench.suites import Cell, Suite, expand
from bench.training import CURVE

PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"
FAMILY_LABELS = {"sbn": "SBN", "fdarn": "fDARN", "doc-sbn": "SBN", "doc-fdarn": "fDARN"}
METRIC_WORDS = {
    "nll": "test NLL in nats (lower is better)",
    "perplexity": "test perplexity per word, an upper bound (lower is better)",
}
MAX_SEEDS = 1000


# -- reading records ---------------------------------------------------------------------------

@dataclass
class CellResult:
    """One cell (one seed) and what its record says."""

    cell: Cell
    status: str                         # complete | diverged | failed | not run
    record: dict | None = None
    record_path: Path | None = None
    curve_path: Path | None = None
    value: float | None = None          # the table's metric
    reason: str = ""

    @property
    def seed(self) -> int:
        return self.cell.spec.seed


def run_dir(runs_dir: Path, suite: Suite, budget: str, cell: Cell) -> Path:
    return Path(runs_dir) / suite.name / budget / cell.run_name


def report_dir(results_dir: Path, suite: Suite, budget: str) -> Path:
    return Path(results_dir) / suite.name / budget


def _locate(cell: Cell, suite: Suite, budget: str, runs_dir: Path, results_dir: Path):
    for directory in (run_dir(runs_dir, suite, budget, cell),
                      report_dir(results_dir, suite, budget) / "records" / cell.run_name):
        if (directory / RECORD).exists():
            return directory
    return None


def read_cell(cell: Cell, suite: Suite, budget: str, runs_dir: Path, results_dir: Path) -> CellResult:
    directory = _locate(cell, suite, budget, runs_dir, results_dir)
    if directory is None:
        return CellResult(cell, "not run")
    path = directory / RECORD
    try:
        record = read_record(path)
    except UserError as error:
        return CellResult(cell, "failed", record_path=path, reason=f"unreadable record: {error}")
    curve = directory / (record.get("curve") or CURVE)
    status = record.get("status", "failed")
    # A failed run writes no curve; one found beside it is left from an earlier attempt.
    has_curve = curve.exists() and status in ("complete", "diverged")
    result = CellResult(cell, status, record, path, curve if has_curve else None)
    if result.status == "failed":
        result.reason = record.get("error", "no reason recorded")
    elif result.status == "diverged":
        result.reason = (f"non-finite loss or validation bound after {record.get('updates', '?')} "
                         f"updates")
    elif result.status == "complete":
        k = record.get("config", {}).get("spec", {}).get("eval_samples")
        metric = find_metric(record, "test", "elbo", k)
        key = suite.table.metric
        if metric is None or metric.get(key) is None:
            result.status = "failed"
            result.reason = f"the record has no test {key} from the {k}-sample ELBO"
        else:
            result.value = float(metric[key])
    else:
        result.reason = f"unknown status {result.status!r} in the record"
        result.status = "failed"
    return result


def discover_seeds(suite: Suite, budget: str, runs_dir: Path, results_dir: Path) -> int:
    """How many seeds have records: 1 + the largest seed with any record (at least 1)."""
    seeds = 1
    while seeds < MAX_SEEDS:
        cells = [c for c in expand(suite, budget, seeds + 1) if c.spec.seed == seeds]
        if not any(_locate(c, suite, budget, runs_dir, results_dir) for c in cells):
            break
        seeds += 1
    return seeds


# -- summarising seeds ---------------------------------------------------------------------------

@dataclass
class Summary:
    """A table position over seeds."""

    results: list[CellResult]
    values: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.values = [r.value for r in self.results if r.status == "complete" and r.value is not None]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def status(self) -> str:
        statuses = {r.status for r in self.results}
        if self.values:
            return "complete" if statuses == {"complete"} else "partial"
        for status in ("failed", "diverged"):
            if status in statuses:
                return status
        return "not run"

    @property
    def problems(self) -> list[CellResult]:
        return [r for r in self.results if r.status != "complete"]


def fmt(value: float | None, decimals: int, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"


def describe_summary(summary: Summary, decimals: int) -> str:
    """'113.4 ± 0.3 (n=3)', '113.4 (n=1)', 'failed', 'diverged' or 'not run'."""
    if summary.mean is None:
        return summary.status
    text = fmt(summary.mean, decimals)
    if summary.std is not None:
        text += f" ± {fmt(summary.std, decimals)}"
    return f"{text} (n={summary.n})"


# -- the paper's numbers -------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperRow:
    model: str
    dim: str
    column: str
    value: float
    kind: str
    reference: str
    location: str


def read_paper(name: str | None, paper_dir: Path = PAPER_DIR) -> list[PaperRow]:
    if not name:
        return []
    path = Path(paper_dir) / f"{name}.csv"
    if not path.exists():
        raise UserError(f"the paper's numbers {path} are missing; restore results/paper/ from git")
    rows = []
    with path.open(newline="") as stream:
        for number, row in enumerate(csv.DictReader(stream), 2):
            try:
                rows.append(PaperRow(row["model"], row["dim"], row["column"], float(row["value"]),
                                     row["kind"], row["reference"], row["location"]))
            except (KeyError, TypeError, ValueError) as error:
                raise UserError(f"{path} line {number} is malformed ({error}); columns: model, dim, "
                                f"column, value, kind, reference, location") from None
    return rows


def model_label(model: str) -> tuple[str, str]:
    """'sbn:200-200' -> ('SBN', '200-200'), as the paper's tables name models."""
    family, _, sizes = model.partition(":")
    return FAMILY_LABELS.get(family, family), sizes


# -- the table -----------------------------------------------------------------------------------

@dataclass
class TableRow:
    kind: str                           # 'ours' or 'literature'
    label: tuple[str, ...]              # (model, dim) or (value,)
    cells: dict[str, dict]              # column value -> {ours, paper, diff, note...}
    reference: str = ""


@dataclass
class Table:
    suite: Suite
    budget: str
    seeds: int
    header: list[str]                   # lines stating suite, budget, seeds, bound, command
    label_names: list[str]
    columns: list[str]                  # column values in order
    has_paper: bool
    rows: list[TableRow]
    notes: list[dict]                   # {status, reason, runs}
    decimals: int
    paper_decimals: int
    tidy: list[dict]                    # the CSV rows


def _column_order(suite: Suite, cells: list[Cell]) -> list[str]:
    present = list(dict.fromkeys(c.column for c in cells))
    ordered = [value for value in suite.table.column_labels if value in present]
    return ordered + [value for value in present if value not in ordered]


def build_table(suite: Suite, budget: str, seeds: int, results: list[CellResult],
                header: list[str], paper_dir: Path = PAPER_DIR) -> Table:
    layout = suite.table
    cells = [r.cell for r in results]
    columns = _column_order(suite, cells)
    by_model = layout.rows == "model"
    label_names = ["Model", "Dim"] if by_model else [layout.rows.capitalize()]
    decimals = 1 if layout.metric == "nll" else 0
    paper_rows = read_paper(layout.paper, paper_dir)
    paper_decimals = decimals
    paper = {(p.model, p.dim, p.column): p for p in paper_rows if p.kind == "paper"}
    notes: list[dict] = []
    rows: list[TableRow] = []
    tidy: list[dict] = []
    common = {"suite": suite.name, "budget": budget, "seeds": seeds}

    grouped: dict[str, dict[str, list[CellResult]]] = {}
    for result in results:
        grouped.setdefault(result.cell.row, {}).setdefault(result.cell.column, []).append(result)
    for row_value, by_column in grouped.items():
        label = model_label(row_value) if by_model else (row_value,)
        table_row = TableRow("ours", label, {})
        for column in columns:
            if column not in by_column:
                continue  # no cell of the suite here (as in the paper's table)
            summary = Summary(sorted(by_column[column], key=lambda r: r.seed))
            text = describe_summary(summary, decimals)
            marks = []
            for problem in summary.problems:
                if problem.status == "not run" and summary.status == "not run":
                    continue
                marks.append(_note(notes, problem))
            if marks:
                text += " " + "".join(f"[{m}]" for m in sorted(set(marks)))
            paper_value = None
            if by_model:
                entry = paper.get((*label, layout.column_label(column)))
                paper_value = entry.value if entry else None
            difference = (summary.mean - paper_value
                          if summary.mean is not None and paper_value is not None else None)
            table_row.cells[column] = {
                "ours": text, "paper": fmt(paper_value, paper_decimals),
                "diff": fmt(difference, decimals, sign=True)}
            tidy.append({**common, "kind": "ours", "model": label[0],
                         "dim": label[1] if by_model else "",
                         "column": layout.column_label(column), "status": summary.status,
                         "n": summary.n, "mean": summary.mean, "std": summary.std,
                         "paper": paper_value, "difference": difference, "display": text,
                         "runs": " ".join(r.cell.run_name for r in summary.results),
                         "reference": "this suite"})
        rows.append(table_row)
    if layout.literature and by_model:
        labels = {layout.column_label(c): c for c in columns}
        literature: dict[tuple[str, str], TableRow] = {}
        for entry in paper_rows:
            if entry.kind != "literature":
                continue
            # A literature number without a column sits in the first column, as in the paper.
            column = labels.get(entry.column, columns[0] if not entry.column else None)
            if column is None:
                continue
            row = literature.setdefault((entry.model, entry.dim),
                                        TableRow("literature", (entry.model, entry.dim), {},
                                                 entry.reference))
            row.cells[column] = {"ours": "", "paper": fmt(entry.value, paper_decimals), "diff": ""}
            tidy.append({**common, "kind": "literature", "model": entry.model, "dim": entry.dim,
                         "column": entry.column or layout.column_label(column), "status": "",
                         "n": "", "mean": "", "std": "", "paper": entry.value, "difference": "",
                         "display": "", "runs": "", "reference": entry.reference})
        rows.extend(literature.values())
    return Table(suite, budget, seeds, header, label_names, columns, bool(layout.paper), rows,
                 notes, decimals, paper_decimals, tidy)


def _note(notes: list[dict], problem: CellResult) -> int:
    """The number of the note that gives this cell's status and reason; cells with the same
    status and reason share one note."""
    reason = " ".join(problem.reason.split())
    for number, note in enumerate(notes, 1):
        if note["status"] == problem.status and note["reason"] == reason:
            note["runs"].append(problem.cell.run_name)
            return number
    notes.append({"status": problem.status, "reason": reason, "runs": [problem.cell.run_name]})
    return len(notes)


def note_text(note: dict, limit: int | None = None) -> str:
    reason = note["reason"]
    if limit is not None and len(reason) > limit:
        reason = reason[:limit].rstrip() + "… (the whole message is in the record)"
    return f"{', '.join(note['runs'])}: {note['status']}" + (f": {reason}" if reason else "")


def _column_headers(table: Table) -> list[str]:
    headers = list(table.label_names)
    for column in table.columns:
        label = table.suite.table.column_label(column)
        headers += [f"{label} (ours)", f"{label} (paper)", f"{label} Δ"] if table.has_paper else [label]
    return headers


def _row_values(table: Table, row: TableRow) -> list[str]:
    label = list(row.label)
    if row.kind == "literature" and row.reference and not row.reference.startswith("not cited"):
        label[0] = f"{label[0]} — {row.reference}"
    values = label
    for column in table.columns:
        cell = row.cells.get(column, {"ours": "", "paper": "", "diff": ""})
        values += [cell["ours"], cell["paper"], cell["diff"]] if table.has_paper else [cell["ours"]]
    return values


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_grid(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md_escape(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def table_grid(table: Table) -> str:
    """The table alone, as Markdown (also what `run` prints)."""
    rows = []
    for index, row in enumerate(table.rows):
        if row.kind == "literature" and table.rows[index - 1].kind != "literature":
            rows.append(["*From the literature (as quoted in the paper)*"]
                        + [""] * (len(_column_headers(table)) - 1))
        rows.append(_row_values(table, row))
    return markdown_grid(_column_headers(table), rows)


def table_markdown(table: Table) -> str:
    parts = [f"# {table.suite.table.title or table.suite.title}", ""]
    parts += [f"- {line}" for line in table.header]
    parts += ["", table_grid(table), ""]
    if table.notes:
        parts += ["Notes:", ""] + [f"[{i}] {_md_escape(note_text(note))}  " for i, note in
                                   enumerate(table.notes, 1)] + [""]
    return "\n".join(parts)


def table_csv(table: Table, command: str, bound: str, updates: int) -> str:
    fields = ["suite", "budget", "updates", "seeds", "bound", "kind", "model", "dim", "column",
              "status", "n", "mean", "std", "paper", "difference", "display", "runs", "reference",
              "command"]
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in table.tidy:
        writer.writerow({**row, "updates": updates, "bound": bound, "command": command})
    return stream.getvalue()


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                   "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$", "—": "---",
                   "−": "-"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in str(text).replace("`", ""))


def _caption(table: Table) -> str:
    suite = table.suite
    budget = suite.budget(table.budget)
    text = (f"{suite.title}. {suite.description} Suite {suite.name}, budget {budget.name} "
            f"({budget.updates:,} updates), {table.seeds} seed(s): mean ± sample standard "
            f"deviation (n = seeds completed).")
    if table.has_paper:
        text += " Paper: the published number; Δ = ours − paper."
    return text


def table_latex(table: Table) -> str:
    per_column = 3 if table.has_paper else 1
    spec = "l" * len(table.label_names) + ("r" * per_column) * len(table.columns)
    lines = [f"% {latex_escape(line)}" for line in [table.suite.title, *table.header]]
    lines += [r"% Needs \usepackage{booktabs}.", r"\begin{table}[t]", r"\centering",
              r"\caption{" + latex_escape(_caption(table)) + "}",
              r"\begin{tabular}{" + spec + "}", r"\toprule"]
    top = [latex_escape(n) for n in table.label_names]
    for column in table.columns:
        label = latex_escape(table.suite.table.column_label(column))
        top.append(rf"\multicolumn{{{per_column}}}{{c}}{{{label}}}" if per_column > 1 else label)
    lines.append(" & ".join(top) + r" \\")
    if table.has_paper:
        lines.append(" & ".join([""] * len(table.label_names)
                                + ["ours", "paper", r"$\Delta$"] * len(table.columns)) + r" \\")
    lines.append(r"\midrule")
    for index, row in enumerate(table.rows):
        if row.kind == "literature" and table.rows[index - 1].kind != "literature":
            lines.append(r"\midrule")
        lines.append(" & ".join(latex_escape(v) for v in _row_values(table, row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\smallskip\footnotesize")
        lines += [latex_escape(f"[{i}] {note_text(note)}") + r"\\"
                  for i, note in enumerate(table.notes, 1)]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# -- throughput ----------------------------------------------------------------------------------

THROUGHPUT_FIELDS = ["suite", "budget", "algorithm", "model", "inference", "dataset", "runs",
                     "updates_per_s", "examples_per_s", "engine", "device", "threads", "command"]


def engine_label(record: dict) -> str:
    """'autograd', 'fused', or 'fused x16' for a run batched with 15 others."""
    engine = record.get("config", {}).get("engine") or {"name": "autograd"}
    batched = engine.get("runs_in_batch", 1)
    return engine["name"] + (f" x{batched}" if batched > 1 else "")


def throughput_rows(results: list[CellResult]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        record = result.record
        if not record or not (record.get("throughput") or {}).get("updates_per_s"):
            continue
        spec = result.cell.spec
        key = (spec.algorithm, spec.model, spec.inference, spec.dataset)
        groups.setdefault(key, []).append(record)
    rows = []
    for (algorithm, model, inference, dataset), records in groups.items():
        environments = [r.get("environment", {}) for r in records]
        rows.append({
            "algorithm": algorithm, "model": model, "inference": inference, "dataset": dataset,
            "runs": len(records),
            "updates_per_s": statistics.fmean(r["throughput"]["updates_per_s"] for r in records),
            "examples_per_s": statistics.fmean(r["throughput"]["examples_per_s"] for r in records),
            "engine": ", ".join(sorted({engine_label(r) for r in records})),
            "device": ", ".join(sorted({str(e.get("device", "?")) for e in environments})),
            "threads": ", ".join(sorted({str(e.get("threads", "?")) for e in environments})),
        })
    return rows


def throughput_markdown(suite: Suite, rows: list[dict], header: list[str]) -> str:
    parts = [f"# Throughput: {suite.title}", ""] + [f"- {line}" for line in header]
    parts += ["- Measured over training updates only (evaluation excluded); mean over the runs "
              "of each algorithm and model. Runs that shared the machine (--jobs) were slowed "
              "by each other. A run batched with others (engine 'fused xN') reports its own "
              "updates/s within the batched computation: the N runs together did N times as "
              "many.", ""]
    if rows:
        parts.append(throughput_grid(rows))
    else:
        parts.append("No run has a throughput measurement (none completed).")
    return "\n".join(parts) + "\n"


def throughput_grid(rows: list[dict]) -> str:
    if not rows:
        return "(no throughput measurements)"
    headers = ["Algorithm", "Model", "Inference", "Dataset", "Runs", "Updates/s", "Examples/s",
               "Engine", "Device", "Threads"]
    body = [[r["algorithm"], r["model"], r["inference"], r["dataset"], str(r["runs"]),
             f"{r['updates_per_s']:.1f}", f"{r['examples_per_s']:.0f}", r.get("engine", ""),
             r["device"], r["threads"]]
            for r in rows]
    return markdown_grid(headers, body)


def throughput_csv(suite: Suite, budget: str, rows: list[dict], command: str) -> str:
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=THROUGHPUT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"suite": suite.name, "budget": budget, **row, "command": command})
    return stream.getvalue()


# -- the figure ----------------------------------------------------------------------------------

def read_curve(path: Path) -> list[dict]:
    with Path(path).open(newline="") as stream:
        rows = []
        for row in csv.DictReader(stream):
            point = {"update": int(float(row["update"])), "valid_bound": float(row["valid_bound"])}
            if row.get("valid_perplexity"):
                point["valid_perplexity"] = float(row["valid_perplexity"])
            rows.append(point)
    return rows


def figure_data(suite: Suite, results: list[CellResult]) -> list[dict]:
    figure = suite.figure
    rows = []
    for result in results:
        if result.curve_path is None:
            continue
        spec = result.cell.spec
        panel, line = str(getattr(spec, figure.panels)), str(getattr(spec, figure.lines))
        for point in read_curve(result.curve_path):
            rows.append({"suite": suite.name, "panel": figure.panel_labels.get(panel, panel),
                         "line": figure.line_labels.get(line, line), "run": result.cell.run_name,
                         "seed": spec.seed, "status": result.status, **point})
    return rows


def figure_csv(rows: list[dict], command: str) -> str:
    fields = ["suite", "panel", "line", "run", "seed", "status", "update", "valid_bound",
              "valid_perplexity", "command"]
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "command": command})
    return stream.getvalue()


def draw_figure(suite: Suite, results: list[CellResult], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = suite.figure
    panels = list(dict.fromkeys(str(getattr(r.cell.spec, figure.panels)) for r in results))
    lines = list(dict.fromkeys(str(getattr(r.cell.spec, figure.lines)) for r in results))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis, panel in zip(axes[0], panels, strict=True):
        for number, line in enumerate(lines):
            mine = [r for r in results if str(getattr(r.cell.spec, figure.panels)) == panel
                    and str(getattr(r.cell.spec, figure.lines)) == line]
            label = figure.line_labels.get(line, line)
            curves = [read_curve(r.curve_path) for r in mine if r.curve_path is not None]
            if not curves:
                statuses = sorted({r.status for r in mine}) or ["not run"]
                axis.plot([], [], color=colours(number % 10), label=f"{label} ({', '.join(statuses)})")
                continue
            # Mean over seeds at the updates every curve has; the band spans the seeds.
            shared = sorted(set.intersection(*({p["update"] for p in c} for c in curves)))
            values = [[next(p["valid_bound"] for p in c if p["update"] == u) for c in curves]
                      for u in shared]
            mean = [statistics.fmean(v) for v in values]
            suffix = "" if len(curves) == 1 else f" (mean of {len(curves)})"
            diverged = any(r.status == "diverged" for r in mine)
            axis.plot(shared, mean, color=colours(number % 10),
                      label=label + suffix + (" (diverged)" if diverged else ""))
            if len(curves) > 1:
                axis.fill_between(shared, [min(v) for v in values], [max(v) for v in values],
                                  color=colours(number % 10), alpha=0.2, linewidth=0)
        axis.set_title(figure.panel_labels.get(panel, panel))
        axis.set_xlabel("parameter updates")
        axis.set_ylabel("validation bound (nats, 10-sample ELBO)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    fig.suptitle(f"{figure.title or suite.title}\n{subtitle}", fontsize="medium")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


# -- the whole report ----------------------------------------------------------------------------

@dataclass
class Report:
    directory: Path
    files: list[Path]
    table: Table
    throughput: list[dict]
    statuses: dict[str, int]

    def main_table(self) -> str:
        return table_grid(self.table)

    def throughput_table(self) -> str:
        return throughput_grid(self.throughput)


def describe_bound(results: list[CellResult], metric: str) -> str:
    ks = sorted({r.record["config"]["spec"].get("eval_samples") for r in results
                 if r.record and "spec" in r.record.get("config", {})} - {None})
    k = "/".join(map(str, ks)) if ks else "10"
    limits = sorted({r.cell.spec.test_examples for r in results}, key=lambda v: (v is None, v))
    rows = ("the whole test set" if limits == [None]
            else "the first " + "/".join(f"{v:,}" for v in limits if v is not None)
            + " test rows (a smoke budget: not comparable with the paper)")
    return (f"{METRIC_WORDS[metric]}, from the {k}-sample ELBO on {rows}, at the parameters with "
            f"the best validation bound (early stopping)")


def canonical_run_command(suite: Suite, budget: str, seeds: int) -> str:
    return f"python -m bench run {suite.name} --budget {budget} --seeds {seeds}"


def write_report(suite: Suite, budget: str | None, runs_dir: Path, results_dir: Path,
                 seeds: int | None = None, command: str | None = None,
                 paper_dir: Path = PAPER_DIR) -> Report:
    """Read every cell's record and write the table, throughput table, figure and record copies."""
    chosen = suite.budget(budget)
    budget = chosen.name
    runs_dir, results_dir = Path(runs_dir), Path(results_dir)
    if seeds is None:
        seeds = discover_seeds(suite, budget, runs_dir, results_dir)
    run_command = canonical_run_command(suite, budget, seeds)
    command = command or f"python -m bench report {suite.name} --budget {budget} --seeds {seeds}"
    cells = expand(suite, budget, seeds)
    results = [read_cell(c, suite, budget, runs_dir, results_dir) for c in cells]
    out = report_dir(results_dir, suite, budget)
    files = _copy_records(suite, budget, results, runs_dir, out)

    bound = describe_bound(results, suite.table.metric)
    commits = sorted({(r.record.get("code") or {}).get("commit") or "unknown"
                      for r in results if r.record})
    dirty = any((r.record.get("code") or {}).get("dirty") for r in results if r.record)
    statuses: dict[str, int] = {}
    for result in results:
        statuses[result.status] = statuses.get(result.status, 0) + 1
    header = [
        f"Suite: `{suite.name}` ({suite.reference or suite.title}); file "
        f"bench/suites/{suite.path.name}",
        f"Budget: `{budget}`: {chosen.describe()}" + (f". {chosen.note}" if chosen.note else ""),
        f"Seeds: {seeds} (0..{seeds - 1}); ours = mean ± sample standard deviation over the seeds "
        f"that completed (n)",
        f"Bound: {bound}",
        f"Runs: {len(results)} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))})",
    ]
    if suite.table.paper:
        header.append(f"Paper: results/paper/{suite.table.paper}.csv ({suite.reference}); "
                      f"Δ = ours − paper"
                      + ("; literature rows as quoted in the paper (sources in "
                         "results/paper/README.md)" if suite.table.literature else ""))
    header += [f"Command: `{command}`" + ("" if command.startswith("python -m bench run")
                                          else f" (records from `{run_command}`)"),
               f"Code: {', '.join(c[:12] for c in commits) or 'no records'}"
               + (" (uncommitted changes)" if dirty else "")]

    table = build_table(suite, budget, seeds, results, header, paper_dir)
    table_path = out / "table.md"
    atomic_write_text(table_path, table_markdown(table))
    atomic_write_text(out / "table.csv", table_csv(table, command, bound, chosen.updates))
    atomic_write_text(out / "table.tex", table_latex(table))
    files += [table_path, out / "table.csv", out / "table.tex"]

    throughput = throughput_rows(results)
    short_header = header[:3] + header[-2:-1]
    atomic_write_text(out / "throughput.md", throughput_markdown(suite, throughput, short_header))
    atomic_write_text(out / "throughput.csv", throughput_csv(suite, budget, throughput, command))
    files += [out / "throughput.md", out / "throughput.csv"]

    if suite.figure is not None:
        rows = figure_data(suite, results)
        atomic_write_text(out / "figure.csv", figure_csv(rows, command))
        draw_figure(suite, results, out / "figure.png",
                    f"suite {suite.name}, budget {budget} ({chosen.updates:,} updates), "
                    f"seeds {seeds}")
        files += [out / "figure.csv", out / "figure.png"]
    return Report(out, files, table, throughput, statuses)


def _copy_records(suite: Suite, budget: str, results: list[CellResult], runs_dir: Path,
                  out: Path) -> list[Path]:
    """Copy record.json and curve.csv of every cell that has them in its run directory."""
    copied = []
    for result in results:
        source = run_dir(runs_dir, suite, budget, result.cell)
        if result.record_path is None or result.record_path.parent != source:
            continue
        target = out / "records" / result.cell.run_name
        target.mkdir(parents=True, exist_ok=True)
        for name in (RECORD, CURVE):
            if (source / name).exists():
                shutil.copyfile(source / name, target / name)
                copied.append(target / name)
        result.record_path = target / RECORD
        if result.curve_path is not None:
            result.curve_path = target / CURVE
    return copied
