"""A `Table` written out: as a Markdown grid (what the verbs print), a Markdown file with its
header and notes, a tidy CSV file, and a LaTeX (booktabs) table."""

from __future__ import annotations

import csv
import io

from bench.reporting.table import Table, TableRow, note_text

# Rows other than ours, under a title of their own.
SECTION_TITLES = {"reference": "Sanity reference (fitted in closed form, no latent variables)",
                  "literature": "From the literature (as quoted in the paper)"}


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


def report_opening(title: str, header: list[str], what: str) -> list[str]:
    """The first lines of a Markdown report: its title, the suite's header lines, and a paragraph
    saying what the numbers below are."""
    return [f"# {title}", "", *header, "", what, ""]


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
        if row.kind in SECTION_TITLES and table.rows[index - 1].kind != row.kind:
            rows.append([f"*{SECTION_TITLES[row.kind]}*"] + [""] * (len(_column_headers(table)) - 1))
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
              "status", "n", "mean", "std", "paper", "difference", "display", "importance_sampled",
              "importance_samples", "updates_trained", "runs", "reference", "command"]
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
            f"({budget.updates:,} {budget.unit}), {table.seeds} seed(s): mean ± sample standard "
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
        if row.kind in SECTION_TITLES and table.rows[index - 1].kind != row.kind:
            lines.append(r"\midrule")
        lines.append(" & ".join(latex_escape(v) for v in _row_values(table, row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\par\smallskip\footnotesize")
        lines += [latex_escape(f"[{i}] {note_text(note)}") + r"\\"
                  for i, note in enumerate(table.notes, 1)]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
