"""The figure of a suite with a [figure] section (Figure 1 of the paper): the validation bound
against updates, one panel per value of `panels`, one line per value of `lines`, the mean over
seeds with a band spanning them; and the same points as tidy CSV.

The same figure against training seconds (`x="seconds"`, figure_seconds.png) places each
validation point at update u at u times the run's mean training seconds per update
(record: train_time_s / updates). Curves hold no clock readings, so that a resumed run's curve is
the uninterrupted one's; throughput is steady within a run, which makes the placement close."""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from bench.reporting.cells import CellResult
from bench.suites import Suite


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
        panel, line = result.cell.index(figure.panels), result.cell.index(figure.lines)
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


def update_ticks():
    """Tick labels for counts of updates on a linear axis: 0, 50k, 1.5M."""
    from matplotlib.ticker import EngFormatter

    return EngFormatter(sep="")


def seconds_per_update(result: CellResult) -> float | None:
    """The run's mean training seconds per update, from its record (None: not recorded)."""
    record = result.record or {}
    seconds, updates = record.get("train_time_s"), record.get("updates")
    if not seconds or not updates:
        return None
    return float(seconds) / float(updates)


def draw_figure(suite: Suite, results: list[CellResult], path: Path, subtitle: str,
                log_updates: bool = False, x: str = "updates") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = suite.figure
    panels = list(dict.fromkeys(r.cell.index(figure.panels) for r in results))
    lines = list(dict.fromkeys(r.cell.index(figure.lines) for r in results))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    colours = plt.get_cmap("tab10")
    for axis, panel in zip(axes[0], panels, strict=True):
        later = []  # every plotted value but each curve's first (the untrained model's)
        drawn = 0
        for number, line in enumerate(lines):
            mine = [r for r in results if r.cell.index(figure.panels) == panel
                    and r.cell.index(figure.lines) == line]
            label = figure.line_labels.get(line, line)
            if x == "seconds":  # each run's own clock: the band is drawn per run, not over seeds
                mine = [r for r in mine if seconds_per_update(r) is not None]
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
            if x == "seconds":  # the mean run's seconds per update places the mean curve
                rate = statistics.fmean(seconds_per_update(r) for r in mine
                                        if r.curve_path is not None)
                shared = [u * rate for u in shared]
            later += [value for v in values[1:] for value in v if math.isfinite(value)]
            suffix = "" if len(curves) == 1 else f" (mean of {len(curves)})"
            diverged = any(r.status == "diverged" for r in mine)
            drawn += 1
            axis.plot(shared, mean, color=colours(number % 10),
                      label=label + suffix + (" (diverged)" if diverged else ""))
            if len(curves) > 1:
                axis.fill_between(shared, [min(v) for v in values], [max(v) for v in values],
                                  color=colours(number % 10), alpha=0.2, linewidth=0)
        if later:  # the untrained model's bound, far below, would flatten every curve
            low, high = min(later), max(later)
            axis.set_ylim(bottom=low - 0.1 * max(high - low, 1.0))
        axis.set_title(figure.panel_labels.get(panel, panel))
        quantity = ("training seconds (update x the run's mean seconds per update)"
                    if x == "seconds" else "parameter updates")
        if log_updates:  # the first point, update 0, has no place on it
            axis.set_xscale("log")
            axis.set_xlabel(f"{quantity} (log scale)")
        else:
            axis.set_xlabel(quantity)
        if x == "updates" and not log_updates:  # 50k, 1.5M: full numbers run into each other
            axis.xaxis.set_major_formatter(update_ticks())
        if not drawn:  # no run of this panel has a curve yet: say so instead of empty axes
            axis.text(0.5, 0.25, "no curves yet", transform=axis.transAxes, ha="center",
                      va="center", color="grey")
            axis.set_xticks([])
            axis.set_yticks([])
        axis.set_ylabel("validation bound (nats, 10-sample ELBO)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    title = figure.title or suite.title
    if x == "seconds":
        title = title.replace("against updates", "against training seconds")
    fig.suptitle(f"{title}\n{subtitle}", fontsize="medium")
    save_png(fig, path, dpi=120)


def save_png(fig, path: Path, dpi: int) -> None:
    """Write a matplotlib figure as PNG atomically (a reader never sees half a file), and close
    it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
