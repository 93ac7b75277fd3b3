"""Published numbers of other papers, with the protocol each was measured under, set beside the
suite's own number for the same model and estimator (results/paper/NAME.csv, named by a suite's
`[table] published`; results/paper/README.md documents the columns).

Numbers from different papers are measured under different protocols (dynamic or fixed
binarization, training or test set, one-sample ELBO or an importance-sampled bound, Adam for
millions of steps or SGD for thousands). The report therefore never puts a published number into
the suite's table. It lists each one with its protocol, the suite's number of the same kind (the
ELBO against the ELBO, an importance-sampled bound against the importance-sampled bound), and says
whether the two are comparable at all: only a test-set number on the same fixed binarization is;
even then the budgets and optimizers differ, and the columns say how.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, fields
from pathlib import Path

from bench.errors import UserError
from bench.reporting.cells import CellResult, Summary, fmt
from bench.reporting.paper import PAPER_DIR, model_label
from bench.reporting.render import report_opening

#: the suite's own protocol on the binarized MNIST it ships (datasets/mnist.py)
OUR_BINARIZATION = "fixed"
BOUND_KINDS = ("elbo", "importance-sampled")
EVALUATED_ON = ("train", "valid", "test")


@dataclass(frozen=True)
class PublishedNumber:
    model: str            # SBN (linear) or nsbn (nonlinear), as the suite's tables name models
    dim: str              # latent layer sizes, deepest first
    column: str           # the estimator as the suite's column labels name it (NVIL, VIMCO, ...)
    value: float          # nats, positive (an NLL or a negated bound)
    printed: str          # the number as printed (sign and all)
    reference: str
    location: str         # table and page
    binarization: str     # fixed | dynamic, and whose
    split: str            # train/valid/test sizes
    evaluated_on: str     # train | test
    bound: str            # elbo | importance-sampled
    bound_samples: int    # samples of the bound: 1 for the ELBO, K for an importance-sampled one,
    #                       0 where the source does not say
    optimizer: str
    steps: str
    train_samples: str    # K per example in training (multi-sample estimators)
    selection: str        # best validation, final parameters, not stated
    source: str           # where the number was read (paper URL or file)


COLUMNS = [f.name for f in fields(PublishedNumber)]


def read_published(name: str | None, paper_dir: Path = PAPER_DIR) -> list[PublishedNumber]:
    if not name:
        return []
    path = Path(paper_dir) / f"{name}.csv"
    if not path.exists():
        raise UserError(f"the published numbers {path} are missing; restore results/paper/ from git")
    numbers = []
    with path.open(newline="") as stream:
        for line, row in enumerate(csv.DictReader(stream), 2):
            try:
                number = PublishedNumber(**{**{k: row[k] for k in COLUMNS},
                                            "value": float(row["value"]),
                                            "bound_samples": int(row["bound_samples"] or 0)})
            except (KeyError, TypeError, ValueError) as error:
                raise UserError(f"{path} line {line} is malformed ({error}); columns: "
                                f"{', '.join(COLUMNS)}") from None
            if number.bound not in BOUND_KINDS or number.evaluated_on not in EVALUATED_ON:
                raise UserError(f"{path} line {line}: bound must be one of {', '.join(BOUND_KINDS)} "
                                f"and evaluated_on one of {', '.join(EVALUATED_ON)}")
            numbers.append(number)
    return numbers


def comparability(number: PublishedNumber, our_samples: int | None) -> str:
    """'yes' with what still differs, or 'no' with why not."""
    reasons = []
    if not number.binarization.startswith(OUR_BINARIZATION):
        reasons.append(f"binarization {number.binarization} (ours: fixed)")
    if number.evaluated_on != "test":
        reasons.append("a training-set bound (ours: test set)")
    if reasons:
        return "no: " + "; ".join(reasons)
    notes = ["same data, split and kind of bound; optimizer and budget differ"]
    if number.bound == "importance-sampled" and our_samples and our_samples != number.bound_samples:
        stated = f"{number.bound_samples:,}" if number.bound_samples else "not stated"
        notes.append(f"K = {stated} (ours {our_samples:,})")
    return "yes: " + "; ".join(notes)


def published_rows(numbers: list[PublishedNumber], results: list[CellResult],
                   column_label) -> list[dict]:
    """One row per published number: the number, its protocol, the suite's number of the same
    kind for the same model and estimator (mean over seeds), and whether they are comparable."""
    grouped: dict[tuple[str, str, str], list[CellResult]] = {}
    for result in results:
        key = (*model_label(result.cell.row), column_label(result.cell.column))
        grouped.setdefault(key, []).append(result)
    columns = {key[2] for key in grouped}
    rows = []
    for number in numbers:
        ours = grouped.get((number.model, number.dim, number.column))
        summary = Summary(sorted(ours, key=lambda r: r.seed)) if ours else None
        value, samples = None, None
        if summary is not None and number.bound == "elbo":
            value = summary.mean
        elif summary is not None and summary.importance_sampled is not None:
            value, samples = summary.importance_sampled
        rows.append({"model": number.model, "dim": number.dim, "estimator": number.column,
                     "published": number.value, "printed": number.printed,
                     "ours": value, "ours_n": summary.n if summary else 0,
                     "in_suite": number.column in columns,
                     "ours_bound": ("10-sample ELBO" if number.bound == "elbo"
                                    else f"importance-sampled, K = {samples:,}" if samples
                                    else ""),
                     "comparable": comparability(number, samples),
                     **{k: getattr(number, k) for k in (
                         "evaluated_on", "bound", "bound_samples", "binarization", "split",
                         "optimizer", "steps", "train_samples", "selection", "reference",
                         "location", "source")}})
    return rows


def published_markdown(rows: list[dict], header: list[str]) -> str:
    lines = report_opening(
        "Published numbers beside ours", header,
        "Each published number with the protocol it was measured under, and the suite's number of "
        "the same kind (ELBO against ELBO, importance-sampled against importance-sampled) for the "
        "same model and estimator at this budget. Only a test-set number on the same fixed "
        "binarization is comparable, and even then the optimizer and the budget differ (columns). "
        "All in nats, lower is better; `printed` is the number as the paper prints it.")
    head = ["Model", "Dim", "Estimator", "Published", "Printed", "Ours", "Evaluated on", "Bound",
            "Binarization", "Optimizer", "Steps", "Train K", "Selection", "Comparable",
            "Reference"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for row in rows:
        bound = ("ELBO" if row["bound"] == "elbo"
                 else f"IS, K = {row['bound_samples']:,}" if row["bound_samples"]
                 else "IS, K not stated")
        ours = (f"{fmt(row['ours'], 1)} (n={row['ours_n']}; {row['ours_bound']})"
                if row["ours"] is not None
                else "not run" if row["in_suite"] else "not in this suite")
        values = [row["model"], row["dim"], row["estimator"], fmt(row["published"], 1),
                  row["printed"], ours, row["evaluated_on"], bound, row["binarization"],
                  row["optimizer"], row["steps"], row["train_samples"], row["selection"],
                  row["comparable"], f"{row['reference']}, {row['location']}"]
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in values) + " |")
    return "\n".join(lines) + "\n"


def published_csv(rows: list[dict], common: dict) -> str:
    stream = io.StringIO()
    names = list(common) + (list(rows[0]) if rows else [])
    writer = csv.DictWriter(stream, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**common, **row})
    return stream.getvalue()
