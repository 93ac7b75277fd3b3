"""Estimates against the number of samples K (a budget's `test_sweep`): for each model, estimator
and sampled bound (`test_sweep_bounds`: the importance-sampled bound on P, `iw`; the geometric-
mean model p* of P and Q, `star`, with its Z^2 estimate and error), the test NLL at each K, mean
over seeds, from the records only. Written as sweep.md, sweep.csv and sweep.png."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from bench.reporting.cells import CellResult, fmt
from bench.reporting.figure import save_png
from bench.reporting.render import report_opening

BOUND_WORDS = {"iw": "log P(x), importance-sampled (model p)",
               "star": "log p*(x) = log p̃*(x) - log Ẑ² (model p*)",
               "star-unnormalised": "log p̃*(x), no normaliser (model p~*)",
               "elbo": "ELBO of P (model p)"}


def sweep_rows(results: list[CellResult], column_label) -> list[dict]:
    """One row per (model, estimator, bound, K): mean NLL over the seeds that have it."""
    grouped: dict[tuple, list[dict]] = {}
    for result in results:
        if result.status != "complete" or not result.record:
            continue
        spec = result.cell.spec
        # The sweep's entries come after the others (a test_iw_samples bound of the same K on
        # more rows, say): the last entry of each (bound, K) is the sweep's.
        latest = {(m.get("bound"), m.get("k")): m for m in result.record.get("metrics", [])
                  if m.get("split") == "test"}
        for (bound, k), metric in latest.items():
            if bound in spec.test_sweep_bounds and k in spec.test_sweep:
                key = (spec.model, column_label(result.cell.column), bound, k)
                grouped.setdefault(key, []).append(metric)
    rows = []
    for (model, estimator, bound, k), metrics in sorted(grouped.items()):
        nll = [m["nll"] for m in metrics]
        row = {"model": model, "estimator": estimator, "bound": bound,
               "quantity": metrics[0].get("quantity", ""), "k": k, "n": len(nll),
               "nll": statistics.fmean(nll),
               "std": statistics.stdev(nll) if len(nll) > 1 else None,
               "num_examples": metrics[0].get("num_examples")}
        if "log_z2" in metrics[0]:
            row["log_z2"] = statistics.fmean(m["log_z2"] for m in metrics)
            row["log_z2_se"] = max(m["log_z2_se"] for m in metrics)
            row["z2_samples"] = metrics[0]["z2_samples"]
        rows.append(row)
    return rows


def sweep_markdown(rows: list[dict], header: list[str]) -> str:
    lines = report_opening(
        "Estimates against the number of samples K", header,
        "Test NLL in nats (lower is better), mean over seeds, at each number of samples K of the "
        "inference network per example; each table one quantity, never mixed. For p*, log Ẑ² is "
        "the normaliser's estimate (its standard error and sample count beside it), already "
        "subtracted.")
    for bound in dict.fromkeys(r["bound"] for r in rows):
        subset = [r for r in rows if r["bound"] == bound]
        ks = sorted({r["k"] for r in subset})
        lines += [f"## {BOUND_WORDS.get(bound, bound)}", ""]
        head = ["Model", "Estimator"] + [f"K={k:,}" for k in ks]
        if any("log_z2" in r for r in subset):
            head.append("log Ẑ² (± se, samples)")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for model, estimator in dict.fromkeys((r["model"], r["estimator"]) for r in subset):
            cells = {r["k"]: r for r in subset if (r["model"], r["estimator"]) == (model, estimator)}
            values = [model, estimator] + [
                f"{fmt(cells[k]['nll'], 2)} (n={cells[k]['n']})" if k in cells else "–"
                for k in ks]
            if "log Ẑ² (± se, samples)" in head:
                z = [r for r in cells.values() if "log_z2" in r]
                values.append(f"{z[0]['log_z2']:.3f} ± {z[0]['log_z2_se']:.3f} "
                              f"({z[0]['z2_samples']:,})" if z else "–")
            lines.append("| " + " | ".join(values) + " |")
        lines.append("")
    return "\n".join(lines)


def sweep_csv(rows: list[dict], common: dict) -> str:
    names = list(common) + ["model", "estimator", "bound", "quantity", "k", "n", "nll", "std",
                            "num_examples", "log_z2", "log_z2_se", "z2_samples"]
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**common, **row})
    return stream.getvalue()


def draw_sweep(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    figure, axes = plt.subplots(1, max(1, len(models)), figsize=(5.5 * max(1, len(models)), 4),
                                squeeze=False)
    styles = {"iw": "-", "star": "--", "star-unnormalised": ":", "elbo": "-."}
    for axis, model in zip(axes[0], models, strict=False):
        for estimator, bound in dict.fromkeys((r["estimator"], r["bound"]) for r in rows
                                              if r["model"] == model):
            line = sorted((r["k"], r["nll"]) for r in rows
                          if (r["model"], r["estimator"], r["bound"]) == (model, estimator, bound))
            axis.plot([k for k, _ in line], [v for _, v in line], styles.get(bound, "-"),
                      marker="o", label=f"{estimator}: {bound}")
        axis.set_xscale("log")
        axis.set_xlabel("samples K")
        axis.set_ylabel("test NLL (nats)")
        axis.set_title(model)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    save_png(figure, path, dpi=120)
