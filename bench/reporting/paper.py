"""The paper's published numbers, read from results/paper/NAME.csv (one row per number:
model, dim, column, value, kind 'paper' or 'literature', reference, location)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UserError

PAPER_DIR = Path(__file__).resolve().parents[2] / "results" / "paper"
FAMILY_LABELS = {"sbn": "SBN", "fdarn": "fDARN", "doc-sbn": "SBN", "doc-fdarn": "fDARN"}


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
