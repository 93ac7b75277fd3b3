"""Every test score of each cell side by side (suites whose runs report a reconstruction error):
the AIS bound on log p(x), the ELBO and importance-sampled bound of the inference network, the
reconstruction error, and the cost of an update. Mean over seeds, from the records only. Written
as scores.md and scores.csv.

For an estimator that trains no inference network (its records validate with AIS: `eval_bound`),
the ELBO and iw columns would score an untrained Q; they are left empty and the row says so.
"""

from __future__ import annotations

import csv
import io
import statistics

from bench.reporting.cells import CellResult, fmt
from bench.reporting.render import markdown_grid, report_opening

FIELDS = ["model", "estimator", "n", "ais_nll", "ais_chains", "ais_steps", "elbo_nll", "iw_nll",
          "iw_k", "squared_error", "mse", "model_evaluations_per_example", "updates_per_s",
          "inference"]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _test_metric(record: dict, bound: str, k=None) -> dict | None:
    found = [m for m in record.get("metrics", []) if m.get("split") == "test"
             and m.get("bound") == bound and (k is None or m.get("k") == k)]
    return found[-1] if found else None


def score_rows(results: list[CellResult], column_label) -> list[dict]:
    grouped: dict[tuple, list[dict]] = {}
    for result in results:
        if result.status == "complete" and result.record:
            key = (result.cell.spec.model, column_label(result.cell.column))
            grouped.setdefault(key, []).append(result.record)
    rows = []
    for (model, estimator), records in grouped.items():
        spec = records[0]["config"]["spec"]
        amortised = records[0]["config"].get("eval_bound", "elbo") != "ais"
        ais = [_test_metric(r, "ais", spec.get("test_ais_chains") or None) for r in records]
        elbo = [_test_metric(r, "elbo", spec.get("eval_samples")) for r in records]
        iw = [_test_metric(r, "iw") for r in records]
        recon = [(r.get("reconstruction") or [None])[-1] for r in records]
        rows.append({
            "model": model, "estimator": estimator, "n": len(records),
            "ais_nll": _mean(m and m["nll"] for m in ais),
            "ais_chains": next((m["k"] for m in ais if m), None),
            "ais_steps": next((m.get("ais_steps") for m in ais if m), None),
            "elbo_nll": _mean(m and m["nll"] for m in elbo) if amortised else None,
            "iw_nll": _mean(m and m["nll"] for m in iw) if amortised else None,
            "iw_k": next((m["k"] for m in iw if m), None) if amortised else None,
            "squared_error": _mean(e and e["squared_error"] for e in recon),
            "mse": _mean(e and e["mse"] for e in recon),
            "model_evaluations_per_example":
                records[0]["config"].get("model_evaluations_per_example"),
            "updates_per_s": _mean((r.get("throughput") or {}).get("updates_per_s")
                                   for r in records),
            "inference": ("inference network" if amortised
                          else "MCMC (Q untrained: no ELBO)"),
        })
    return rows


def scores_markdown(rows: list[dict], header: list[str]) -> str:
    lines = report_opening(
        "Every test score", header,
        "Test NLL in nats (lower is better) from annealed importance sampling (AIS, needs no "
        "inference network), from the inference network's ELBO and importance-sampled bound (iw), "
        "the reconstruction error of the test rows from the latents each estimator infers (squared"
        " error per image and per pixel: Q's sample, or the MCMC chain's last state), model "
        "evaluations per example and update, and training updates/s. Mean over seeds.")
    headers = ["Model", "Estimator", "n", "AIS NLL", "ELBO NLL", "iw NLL", "sq. error / image",
               "MSE / pixel", "evals / example", "updates/s", "inference"]
    grid = [[r["model"], r["estimator"], str(r["n"]),
             fmt(r["ais_nll"], 2) + (f" ({r['ais_chains']}×{r['ais_steps']})"
                                     if r["ais_nll"] is not None else ""),
             fmt(r["elbo_nll"], 2), fmt(r["iw_nll"], 2) + (f" (K={r['iw_k']:,})" if r["iw_k"]
                                                          else ""),
             fmt(r["squared_error"], 2), fmt(r["mse"], 4),
             fmt(r["model_evaluations_per_example"], 0), fmt(r["updates_per_s"], 1),
             r["inference"]] for r in rows]
    return "\n".join(lines + [markdown_grid(headers, grid), ""])


def scores_csv(rows: list[dict], common: dict) -> str:
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=list(common) + FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**common, **row})
    return stream.getvalue()
