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
    figure_seconds.png               the same against training seconds
    published.md, published.csv      other papers' numbers with their protocols (`[table] published`)
    sweep.md, sweep.csv, sweep.png   test NLL against the number of samples K (a budget's
                                     `test_sweep`), per sampled bound
    scores.md, scores.csv            every test score of each cell (AIS, ELBO, iw, reconstruction
                                     error, cost): suites whose runs report reconstructions
    records/<run name>/              a copy of each record.json and curve.csv (never checkpoints)

Every file states the suite, the budget, the number of seeds, the bound and the command.
The CSV files are tidy (one row per table cell) and carry the same statement in their columns.

One module per concern:

    cells.py       a cell's record read into a CellResult; seeds summarised (Summary)
    paper.py       the paper's numbers (results/paper/NAME.csv)
    published.py   other papers' numbers with their protocols, beside ours
    sweep.py       estimates against K
    scores.py      every test score of each cell side by side
    table.py       the table built from cell results and the paper's numbers
    render.py      the table as Markdown, CSV and LaTeX
    throughput.py  the throughput table
    figure.py      the figure (validation bound against updates or seconds) and its CSV
    header.py      the statement every file opens with, and the commands that remake it
    copies.py      records and curves copied into the report
    report.py      write_report: all of the above, for one suite and budget
    console.py     a run's summary on the terminal (train)

Where records, curves and checkpoints live is bench/layout.py's, shared with training; nothing
here imports the training engine. The names below are this package's public API.
"""

from bench.layout import report_dir, run_dir
from bench.reporting.cells import (
    MAX_SEEDS,
    CellResult,
    Summary,
    describe_summary,
    discover_seeds,
    fmt,
    read_cell,
    read_reference,
)
from bench.reporting.figure import draw_figure, figure_csv, figure_data, read_curve
from bench.reporting.header import (
    METRIC_WORDS,
    canonical_report_command,
    canonical_run_command,
    describe_bound,
    report_header,
    suite_argument,
    suite_file,
)
from bench.reporting.paper import FAMILY_LABELS, PAPER_DIR, PaperRow, model_label, read_paper
from bench.reporting.render import (
    latex_escape,
    markdown_grid,
    table_csv,
    table_grid,
    table_latex,
    table_markdown,
)
from bench.reporting.report import Report, write_report
from bench.reporting.table import Table, TableRow, build_table, note_text
from bench.reporting.throughput import (
    THROUGHPUT_FIELDS,
    engine_label,
    throughput_csv,
    throughput_grid,
    throughput_markdown,
    throughput_rows,
)

__all__ = [
    "FAMILY_LABELS", "MAX_SEEDS", "METRIC_WORDS", "PAPER_DIR", "THROUGHPUT_FIELDS", "CellResult", "PaperRow",
    "Report", "Summary", "Table", "TableRow", "build_table", "canonical_report_command",
    "canonical_run_command", "describe_bound", "describe_summary", "discover_seeds",
    "draw_figure", "engine_label", "figure_csv", "figure_data", "fmt", "latex_escape",
    "markdown_grid", "model_label", "note_text", "read_cell", "read_curve", "read_reference", "read_paper",
    "report_dir", "report_header", "run_dir", "suite_argument", "suite_file", "table_csv",
    "table_grid", "table_latex", "table_markdown", "throughput_csv", "throughput_grid",
    "throughput_markdown", "throughput_rows", "write_report",
]
