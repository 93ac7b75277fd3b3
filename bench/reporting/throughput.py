"""Throughput tables: training updates/s, examples/s and model evaluations/s per algorithm and
model, read from the records (`throughput`, `environment`, `config.engine`)."""

from __future__ import annotations

import csv
import io
import statistics

from bench.reporting.cells import CellResult
from bench.reporting.render import markdown_grid
from bench.suites import Suite

THROUGHPUT_FIELDS = ["suite", "budget", "algorithm", "model", "inference", "dataset", "runs",
                     "updates_per_s", "examples_per_s", "model_evaluations_per_s", "engine",
                     "device", "threads", "command"]


def engine_label(record: dict) -> str:
    """'stacked', or 'stacked x16' for a run stacked with 15 others (records of earlier versions
    name their engine, 'fused' or 'autograd')."""
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
            # an estimator's cost per example differs (wake-sleep: 2 model evaluations); records
            # of earlier versions carry no count
            "model_evaluations_per_s": _mean_or_none(
                r["throughput"].get("model_evaluations_per_s") for r in records),
            "engine": ", ".join(sorted({engine_label(r) for r in records})),
            "device": ", ".join(sorted({str(e.get("device", "?")) for e in environments})),
            "threads": ", ".join(sorted({str(e.get("threads", "?")) for e in environments})),
        })
    return rows


def _mean_or_none(values) -> float | None:
    values = list(values)
    return None if any(v is None for v in values) else statistics.fmean(values)


def throughput_markdown(suite: Suite, rows: list[dict], header: list[str]) -> str:
    parts = [f"# Throughput: {suite.title}", ""] + [f"- {line}" for line in header]
    parts += ["- Measured over training updates only (evaluation excluded); mean over the runs "
              "of each algorithm and model. Runs that shared the machine (--jobs) were slowed "
              "by each other. A run stacked with others (engine 'stacked xN') reports its own "
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
               "Model evals/s", "Engine", "Device", "Threads"]
    body = [[r["algorithm"], r["model"], r["inference"], r["dataset"], str(r["runs"]),
             f"{r['updates_per_s']:.1f}", f"{r['examples_per_s']:.0f}",
             "-" if r.get("model_evaluations_per_s") is None
             else f"{r['model_evaluations_per_s']:.0f}", r.get("engine", ""),
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
