"""A suite's table, built from its cell results: one row per model (or row value), per column the
mean ± sample standard deviation over seeds, the paper's number and the difference; the paper's
literature rows; notes naming every failed, diverged or missing cell with its reason. `tidy`
holds the same table as one dict per cell, the rows of table.csv."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.reporting.cells import CellResult, Summary, describe_summary, fmt
from bench.reporting.paper import PAPER_DIR, model_label, read_paper
from bench.suites import Cell, Suite


@dataclass
class TableRow:
    kind: str                           # 'ours', 'reference' or 'literature'
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
                header: list[str], paper_dir: Path = PAPER_DIR,
                reference_results: list | None = None) -> Table:
    layout = suite.table
    reference_results = reference_results or []
    cells = [r.cell for r in results]
    columns = _column_order(suite, cells)
    by_model = layout.rows == "model"
    label_names = ["Model", "Dim"] if by_model else [layout.rows.replace("_", " ").capitalize()]
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
                         "importance_sampled": (summary.importance_sampled or (None, None))[0],
                         "importance_samples": (summary.importance_sampled or (None, None))[1],
                         "updates_trained": " ".join(str(u) for u in summary.updates),
                         "runs": " ".join(r.cell.run_name for r in summary.results),
                         "reference": "this suite"})
        rows.append(table_row)
    references: dict[tuple, TableRow] = {}
    for reference in reference_results:
        label = (reference.cell.label, "") if by_model else (reference.cell.label,)
        row = references.setdefault(label, TableRow("reference", label, {}, "closed form"))
        text = fmt(reference.value, decimals) if reference.value is not None else reference.status
        if reference.status == "failed":
            text += f" [{_note(notes, reference)}]"
        row.cells[reference.cell.column] = {"ours": text, "paper": "", "diff": ""}
        tidy.append({**common, "kind": "reference", "model": label[0],
                     "dim": label[1] if by_model else "",
                     "column": layout.column_label(reference.cell.column),
                     "status": reference.status, "n": 1 if reference.value is not None else 0,
                     "mean": reference.value, "std": None, "paper": None, "difference": None,
                     "display": text, "importance_sampled": None, "importance_samples": None,
                     "updates_trained": "", "runs": reference.cell.run_name,
                     "reference": reference.record.get("config", {}).get("reference", {}).get(
                         "description", "") if reference.record else ""})
    rows.extend(references.values())
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
                         "display": "", "importance_sampled": "", "importance_samples": "",
                         "updates_trained": "", "runs": "", "reference": entry.reference})
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
