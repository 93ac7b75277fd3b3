"""Suites of runs as data: one TOML file per suite in `bench/suites/`, expanded into cells.

A suite file has five parts (see `bench/suites/table1.toml` for a commented example):

    [suite]        title, description, default_budget, reference (what the suite reproduces)
    [defaults]     RunSpec fields (and algorithm options) shared by every cell
    [[cells]]      one or more blocks; a list value is crossed with the other lists of its block
                   (a product), a scalar applies to every cell of the block. Keys are RunSpec
                   fields (`algorithm`, `model`, `dataset`, `inference`, `learning_rate`, ...),
                   `options` (a table of algorithm options), `label` (a name for the block's cells
                   that a table or figure may be indexed by, e.g. "Adam 1e-3"), or any other name,
                   taken as an algorithm option as with `train --set`. `updates` and `seed` are not
                   allowed: budgets and `--seeds` set them.
    [table]        metric ("nll": test NLL from the 10-sample ELBO, or "perplexity"), `bound`
                   ("elbo", the default, or "ais": the test AIS bound of `test_ais_chains`), `rows` and
                   `columns` (the RunSpec field that indexes each), `column_labels` (value -> label,
                   also the column order), `paper` (the file in results/paper/ with the published
                   numbers, optional), `literature` (show that file's literature rows),
                   `published` (a file in results/paper/ of other papers' numbers with their
                   protocols, reported beside ours in published.md; bench/reporting/published.py)
    [[references]] optional: sanity rows fitted in closed form (bench/references.py): `name`
                   (e.g. "unigram"), `dataset`, `label` (the row's label), `column` (the value of
                   the table's column field it sits under; default: the dataset)
    [figure]       optional: `panels` and `lines` (RunSpec fields), `panel_labels`, `line_labels`,
                   `title`: the validation bound against updates, read from each run's curve.csv;
                   `update_axis` ("auto": logarithmic for budgets of 500,000 updates or more,
                   "log", "linear")
    [budgets.NAME] per budget: `updates`, `eval_interval` and any other RunSpec field except
                   `seed`; `note` (text stated with every table run under it);
                   `algorithm_options` (algorithm name -> options the budget sets for its cells,
                   e.g. `{ nvil = { variance_normalisation = false } }`: a protocol that changes
                   an estimator's setting names it here and in its note); `continues` (another
                   budget: its finished runs are carried on from their checkpoints to this cap)

`expand(suite, budget, seeds)` gives the cells in run order (every cell of seed 0 first, so an
interrupted suite has whole tables early): each a `Cell` with its RunSpec, its table position and
its run directory name. Every problem with a file is a `UserError` naming the file.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError, unknown_name
from bench.specs import SPEC_FIELDS, RunSpec

SUITES_DIR = Path(__file__).resolve().parent / "suites"
METRICS = ("nll", "perplexity")
TABLE_BOUNDS = ("elbo", "ais")
SECTIONS = ("suite", "defaults", "cells", "references", "table", "figure", "budgets")
# Fields a suite may not set: the budget sets `updates`, `--seeds` sets `seed`.
RESERVED = ("updates", "seed")
# The fields a table or figure may be indexed by.
INDEX_FIELDS = ("algorithm", "model", "dataset", "inference", "split", "optimizer",
                "learning_rate", "init_scale", "label")
LABEL = "label"  # a cell's name in its block: an index, not a run setting
UPDATE_AXES = ("auto", "log", "linear")
LONG_BUDGET = 500_000


@dataclass(frozen=True)
class Budget:
    name: str
    settings: dict[str, Any]          # RunSpec fields
    note: str = ""
    #: matched model evaluations: `updates`, `eval_interval` and `patience` are counted for an
    #: estimator making one model evaluation per example; one making E trains 1/E as many updates
    match_evaluations: bool = False
    #: algorithm name (before any ":preset") -> options this budget sets for that algorithm's
    #: cells, over the cells' own: a protocol that changes an estimator's setting, e.g. NVIL
    #: without variance normalisation, says so in the budget (and its note), never silently
    algorithm_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: another budget of the suite whose finished runs this one carries on: a cell with no run
    #: directory here starts from that budget's checkpoint (same settings but the cap on updates)
    continues: str = ""

    @property
    def updates(self) -> int:
        return int(self.settings["updates"])

    @property
    def unit(self) -> str:
        return "model evaluations per example" if self.match_evaluations else "updates"

    def describe(self) -> str:
        patience = self.settings.get("patience")
        parts = [f"{self.updates:,} {self.unit}" if patience is None else
                 f"until the validation bound has not improved for {int(patience):,} {self.unit}, "
                 f"at most {self.updates:,} {self.unit}"]
        if self.match_evaluations:
            parts[0] += (" (an estimator making E model evaluations per example trains 1/E as "
                         "many updates)")
        if "eval_interval" in self.settings:
            parts.append(f"validation every {int(self.settings['eval_interval']):,}")
        if self.settings.get("eval_examples") is not None:
            parts.append(f"validation on the first {self.settings['eval_examples']:,} rows")
        if self.settings.get("test_examples") is not None:
            parts.append(f"test on the first {self.settings['test_examples']:,} rows")
        return ", ".join(parts)


@dataclass(frozen=True)
class TableLayout:
    metric: str
    rows: str
    columns: str
    column_labels: dict[str, str]
    paper: str | None = None
    literature: bool = True
    title: str = ""
    published: str | None = None    # results/paper/NAME.csv: other papers' numbers, with protocol
    #: the test bound the metric comes from: "elbo" (K = eval_samples) or "ais" (the chains of
    #: test_ais_chains): one bound for every cell, whatever each was validated with
    bound: str = "elbo"

    def column_label(self, value: str) -> str:
        return self.column_labels.get(value, value)


@dataclass(frozen=True)
class FigureLayout:
    panels: str
    lines: str
    panel_labels: dict[str, str] = field(default_factory=dict)
    line_labels: dict[str, str] = field(default_factory=dict)
    title: str = ""
    # "log", "linear", or "auto": log for budgets of LONG_BUDGET updates or more, where curves
    # over millions of updates are flat on a linear axis.
    update_axis: str = "auto"

    def log_updates(self, updates: int) -> bool:
        return self.update_axis == "log" or (self.update_axis == "auto" and updates >= LONG_BUDGET)


@dataclass(frozen=True)
class Reference:
    """A sanity row of a suite's table: a reference model fitted in closed form on `dataset`
    (bench/references.py), shown under the table's column value `column`."""

    name: str
    dataset: str
    label: str
    column: str

    @property
    def run_name(self) -> str:
        return f"{self.dataset}-reference-{self.name}"


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    title: str
    description: str
    reference: str
    default_budget: str
    defaults: dict[str, Any]
    blocks: tuple[dict[str, Any], ...]
    table: TableLayout
    figure: FigureLayout | None
    budgets: dict[str, Budget]
    references: tuple[Reference, ...] = ()

    def budget(self, name: str | None) -> Budget:
        name = name or self.default_budget
        if name not in self.budgets:
            raise unknown_name("budget", name, self.budgets, f"budgets of suite {self.name}")
        return self.budgets[name]


@dataclass(frozen=True)
class Cell:
    """One run of a suite: its spec, where it sits in the table (`row`, `column` are the values of
    the table's index fields) and the name of its run directory."""

    spec: RunSpec
    row: str
    column: str
    run_name: str
    label: str = ""

    def index(self, name: str) -> str:
        """The cell's value of an index field (INDEX_FIELDS) as the table and figure show it."""
        return self.label if name == LABEL else str(getattr(self.spec, name))

    @property
    def position(self) -> tuple[str, str]:
        return (self.row, self.column)


def names() -> list[str]:
    """Every suite shipped in bench/suites/, sorted."""
    return sorted(path.stem for path in SUITES_DIR.glob("*.toml"))


def load(name_or_path: str | Path) -> Suite:
    """A suite by name (bench/suites/NAME.toml) or by path to a TOML file, validated."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        if str(name_or_path) not in names():
            raise unknown_name("suite", str(name_or_path), names())
        path = SUITES_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise UserError(f"suite file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"suite file {path} is not valid TOML: {error}") from None
    return _parse(path, data)


def _parse(path: Path, data: dict) -> Suite:
    def fail(message: str) -> UserError:
        return UserError(f"suite file {path}: {message}")

    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise fail(f"unknown section(s) {', '.join(unknown)}; valid sections: {', '.join(SECTIONS)}")
    head = _table(data, "suite", fail, required=True)
    defaults = _table(data, "defaults", fail)
    _check_settings(defaults, "[defaults]", fail, lists=False)
    blocks = data.get("cells")
    if not isinstance(blocks, list) or not blocks or not all(isinstance(b, dict) for b in blocks):
        raise fail("needs at least one [[cells]] block (a list of tables)")
    for number, block in enumerate(blocks, 1):
        if not block:
            raise fail(f"[[cells]] block {number} is empty")
        _check_settings(block, f"[[cells]] block {number}", fail, lists=True)
    table = _table_layout(_table(data, "table", fail, required=True), fail)
    figure = _figure_layout(data["figure"], fail) if "figure" in data else None
    references = _references(data.get("references", []), fail)
    budgets = _budgets(_table(data, "budgets", fail, required=True), fail)
    default_budget = head.get("default_budget", "short")
    if default_budget not in budgets:
        raise fail(f"default_budget {default_budget!r} is not one of its budgets "
                   f"({', '.join(budgets)})")
    for key in ("title", "description", "reference"):
        if not isinstance(head.get(key, ""), str):
            raise fail(f"[suite] {key} must be a string")
    suite = Suite(name=path.stem, path=path, title=head.get("title", path.stem),
                  description=head.get("description", ""), reference=head.get("reference", ""),
                  default_budget=default_budget, defaults=defaults, blocks=tuple(blocks),
                  table=table, figure=figure, budgets=budgets, references=references)
    # Expanding once checks every cell: specs, algorithm names and options, model specs, datasets,
    # and that no two cells share a table position or a run directory.
    try:
        expand(suite, next(iter(budgets)), 1)
    except UserError as error:
        message = str(error)
        raise (error if message.startswith(f"suite file {path}") else fail(message)) from None
    return suite


def _table(data: dict, key: str, fail, required: bool = False) -> dict:
    value = data.get(key)
    if value is None:
        if required:
            raise fail(f"missing section [{key}]")
        return {}
    if not isinstance(value, dict):
        raise fail(f"[{key}] must be a table")
    return dict(value)


def _check_settings(settings: dict, where: str, fail, lists: bool) -> None:
    for key, value in settings.items():
        if key in RESERVED:
            raise fail(f"{where} sets {key!r}: the budget sets updates and --seeds sets the seed")
        values = value if lists and isinstance(value, list) else [value]
        if lists and isinstance(value, list) and not value:
            raise fail(f"{where}: {key} is an empty list")
        if key == "options":
            if not all(isinstance(v, dict) for v in values):
                raise fail(f"{where}: options must be a table of algorithm options")
            continue
        if key == LABEL:
            if lists and isinstance(value, list) or not isinstance(value, str):
                raise fail(f"{where}: label must be one string, the name of the block's cells")
            continue
        if key in SPEC_FIELDS:
            for item in values:
                _check_type(key, item, where, fail)


def _check_type(key: str, value: Any, where: str, fail) -> None:
    annotation = str(SPEC_FIELDS[key].type)
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        raise fail(f"{where}: {key} cannot be none in a suite file; leave it out for the default")
    kinds = {"int": (int,), "float": (int, float), "str": (str,)}
    expected = kinds[annotation.split(" ")[0]] if annotation.split(" ")[0] in kinds else None
    if expected and (isinstance(value, bool) or not isinstance(value, expected)):
        raise fail(f"{where}: {key} = {value!r} should be {annotation}")


def _labels(value, where: str, fail) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise fail(f"{where} must be a table of value = \"label\"")
    return dict(value)


def _table_layout(raw: dict, fail) -> TableLayout:
    allowed = {"metric", "rows", "columns", "column_labels", "paper", "literature", "title",
               "published", "bound"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise fail(f"[table]: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}")
    metric = raw.get("metric", "nll")
    if metric not in METRICS:
        raise fail(f"[table] metric {metric!r} unknown; valid metrics: {', '.join(METRICS)}")
    for key in ("rows", "columns"):
        if raw.get(key) not in INDEX_FIELDS:
            raise fail(f"[table] {key} must name one of {', '.join(INDEX_FIELDS)}, "
                       f"got {raw.get(key)!r}")
    if raw["rows"] == raw["columns"]:
        raise fail("[table] rows and columns must be different fields")
    paper = raw.get("paper")
    if paper is not None and not isinstance(paper, str):
        raise fail("[table] paper must be the name of a file in results/paper/ (e.g. \"table1\")")
    published = raw.get("published")
    if published is not None and not isinstance(published, str):
        raise fail("[table] published must be the name of a file in results/paper/ "
                   "(e.g. \"estimators\")")
    bound = raw.get("bound", "elbo")
    if bound not in TABLE_BOUNDS:
        raise fail(f"[table] bound {bound!r} unknown; valid bounds: {', '.join(TABLE_BOUNDS)}")
    return TableLayout(metric=metric, rows=raw["rows"], columns=raw["columns"], bound=bound,
                       column_labels=_labels(raw.get("column_labels"), "[table] column_labels",
                                             fail),
                       paper=paper, literature=bool(raw.get("literature", True)),
                       title=str(raw.get("title", "")), published=published)


def _figure_layout(raw, fail) -> FigureLayout:
    if not isinstance(raw, dict):
        raise fail("[figure] must be a table")
    allowed = {"panels", "lines", "panel_labels", "line_labels", "title", "update_axis"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise fail(f"[figure]: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}")
    for key in ("panels", "lines"):
        if raw.get(key) not in INDEX_FIELDS:
            raise fail(f"[figure] {key} must name one of {', '.join(INDEX_FIELDS)}, "
                       f"got {raw.get(key)!r}")
    axis = raw.get("update_axis", "auto")
    if axis not in UPDATE_AXES:
        raise fail(f"[figure] update_axis {axis!r} unknown; valid: {', '.join(UPDATE_AXES)}")
    return FigureLayout(panels=raw["panels"], lines=raw["lines"], update_axis=axis,
                        panel_labels=_labels(raw.get("panel_labels"), "[figure] panel_labels", fail),
                        line_labels=_labels(raw.get("line_labels"), "[figure] line_labels", fail),
                        title=str(raw.get("title", "")))


def _references(raw, fail) -> tuple[Reference, ...]:
    import datasets
    from bench import references

    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise fail("[[references]] must be a list of tables")
    found = []
    for number, entry in enumerate(raw, 1):
        unknown = sorted(set(entry) - {"name", "dataset", "label", "column"})
        if unknown:
            raise fail(f"[[references]] {number}: unknown key(s) {', '.join(unknown)}; valid: "
                       f"column, dataset, label, name")
        name, dataset = entry.get("name"), entry.get("dataset")
        if name not in references.names():
            raise fail(f"[[references]] {number}: unknown reference {name!r}; valid: "
                       f"{', '.join(references.names())}")
        if dataset not in datasets.names():
            raise fail(f"[[references]] {number}: unknown dataset {dataset!r}; valid: "
                       f"{', '.join(datasets.names())}")
        found.append(Reference(name, dataset, str(entry.get("label", name)),
                               str(entry.get("column", dataset))))
    return tuple(found)


def _budgets(raw: dict, fail) -> dict[str, Budget]:
    if not raw:
        raise fail("[budgets] needs at least one budget, e.g. [budgets.smoke]")
    budgets = {}
    for name, settings in raw.items():
        if not isinstance(settings, dict):
            raise fail(f"[budgets.{name}] must be a table")
        settings = dict(settings)
        note = settings.pop("note", "")
        match = settings.pop("match_evaluations", False)
        if not isinstance(match, bool):
            raise fail(f"[budgets.{name}]: match_evaluations must be true or false")
        algorithm_options = _algorithm_options(settings.pop("algorithm_options", {}),
                                               f"[budgets.{name}]", fail)
        continues = settings.pop("continues", "")
        if continues and (continues not in raw or continues == name):
            raise fail(f"[budgets.{name}]: continues = {continues!r} names no other budget of "
                       f"this suite (valid: {', '.join(b for b in raw if b != name)})")
        if "updates" not in settings:
            raise fail(f"[budgets.{name}] must set updates")
        for key, value in settings.items():
            if key not in SPEC_FIELDS or key in ("seed", "options"):
                raise fail(f"[budgets.{name}]: {key!r} is not a run setting a budget may set "
                           f"(valid: note, match_evaluations, algorithm_options, continues and "
                           f"the RunSpec fields other than seed and options)")
            _check_type(key, value, f"[budgets.{name}]", fail)
        budgets[name] = Budget(name=name, settings=settings, note=str(note),
                               match_evaluations=match, algorithm_options=algorithm_options,
                               continues=str(continues))
    return budgets


def _algorithm_options(raw, where: str, fail) -> dict[str, dict[str, Any]]:
    """`algorithm_options = { nvil = { variance_normalisation = false } }`: per algorithm name,
    a table of its options (checked against the algorithm when the suite expands)."""
    from algorithms.registry import resolve

    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise fail(f"{where}: algorithm_options must be a table of algorithm = {{ option = value }}"
                   ", e.g. algorithm_options = { nvil = { variance_normalisation = false } }")
    for name in raw:
        try:
            resolve(name)
        except UserError as error:
            raise fail(f"{where}: algorithm_options: {error}") from None
    return {name: dict(options) for name, options in raw.items()}


def _block_cells(defaults: dict, block: dict) -> list[dict[str, Any]]:
    """The product of a block's list values, each merged over the defaults."""
    keys = list(block)
    choices = [block[key] if isinstance(block[key], list) else [block[key]] for key in keys]
    cells = []
    for combination in itertools.product(*choices):
        settings = dict(defaults)
        options = dict(settings.pop("options", {}) or {})
        for key, value in zip(keys, combination, strict=True):
            if key == "options":
                options.update(value)
            else:
                settings[key] = value
        for key in [k for k in settings if k not in SPEC_FIELDS and k != LABEL]:
            options[key] = settings.pop(key)  # any other name is an algorithm option, as with --set
        settings["options"] = options
        cells.append(settings)
    return cells


def run_name(spec: RunSpec) -> str:
    """The run directory's name: the spec's run name, plus the training settings a suite may vary
    that the spec's own name leaves out (a learning rate, an optimizer, an initial scale, the
    selection, when not the default) and the algorithm options if any."""
    name = spec.run_name()
    default = RunSpec()
    varied = {"lr": spec.learning_rate if spec.learning_rate != default.learning_rate else None,
              "opt": spec.optimizer if spec.optimizer != default.optimizer else None,
              "init": spec.init_scale if spec.init_scale != default.init_scale else None,
              "select": spec.selection if spec.selection != default.selection else None}
    extra = [f"{key}={value}" for key, value in varied.items() if value is not None]
    if extra:
        name = f"{name}-{'-'.join(extra)}"
    if spec.options:
        extra = "-".join(f"{key}={spec.options[key]}" for key in sorted(spec.options))
        name = f"{name}-{extra}"
    return "".join(c if c.isalnum() or c in ".+-=" else "_" for c in name)


def expand(suite: Suite, budget: str | None = None, seeds: int = 1,
           overrides: dict[str, Any] | None = None) -> list[Cell]:
    """The suite's cells for a budget and seeds 0..seeds-1, every cell of seed 0 first.
    `overrides` replaces RunSpec fields in every cell (e.g. the device)."""
    import algorithms
    import datasets
    from algorithms.registry import split
    from models import ModelSpec

    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    chosen = suite.budget(budget)
    base = [settings for block in suite.blocks for settings in _block_cells(suite.defaults, block)]
    cells, seen_names, seen_positions = [], {}, {}
    for seed in range(seeds):
        for settings in base:
            values = {**settings, **chosen.settings, **(overrides or {}), "seed": seed}
            family = split(str(values.get("algorithm", RunSpec.algorithm)))[0]
            if family in chosen.algorithm_options:
                values["options"] = {**values.get("options", {}),
                                     **chosen.algorithm_options[family]}
            label = str(values.pop(LABEL, ""))
            if chosen.match_evaluations:
                values.update(_evaluation_matched(RunSpec(**values)))
            spec = RunSpec(**values)
            if seed == 0:  # what follows does not depend on the seed
                cls, preset = algorithms.parse_name(spec.algorithm)
                cls.resolve_options(preset, spec.options)
                ModelSpec.parse(spec.model, inference=spec.inference)
                if spec.dataset not in datasets.names():
                    raise unknown_name("dataset", spec.dataset, datasets.names())
            cell = Cell(spec=spec, row="", column="", run_name=run_name(spec), label=label)
            cell = dataclasses.replace(cell, row=cell.index(suite.table.rows),
                                       column=cell.index(suite.table.columns))
            if cell.run_name in seen_names:
                raise UserError(f"suite file {suite.path}: two cells have the same run name "
                                f"{cell.run_name!r}")
            position = (cell.row, cell.column, seed)
            if position in seen_positions:
                raise UserError(
                    f"suite file {suite.path}: cells {seen_positions[position]} and "
                    f"{cell.run_name} share the table position ({suite.table.rows}={cell.row}, "
                    f"{suite.table.columns}={cell.column}); make [table] rows/columns tell them apart")
            seen_names[cell.run_name] = cell
            seen_positions[position] = cell.run_name
            cells.append(cell)
    return cells


def _evaluation_matched(spec: RunSpec) -> dict[str, int]:
    """A matched-evaluations budget for one cell: its updates, validation interval and patience
    divided by its estimator's model evaluations per example (at least 1 each)."""
    import algorithms
    from models import ModelSpec

    cls, preset = algorithms.parse_name(spec.algorithm)
    model, inference = ModelSpec.parse(spec.model, inference=spec.inference).build(1)
    options = cls.resolve_options(preset, spec.options)
    evaluations = cls(model, inference, options).evaluations_per_example(options)
    scaled = {"updates": spec.updates, "eval_interval": spec.eval_interval}
    if spec.patience is not None:
        scaled["patience"] = spec.patience
    return {key: max(1, round(value / evaluations)) for key, value in scaled.items()}
