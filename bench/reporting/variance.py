"""The gradient-variance report (`python -m bench variance`), written from its rows only:

    variance.csv     one row per (model, estimator, checkpoint, group): bench/variance.py FIELDS,
                     and the command
    variance.md      per model, the variance of each group's update against updates, and at the
                     last checkpoint the variance, SNR, bias (± its Monte Carlo floor) and cosine
    variance.png     variance against updates (log scale), one panel per model and group
    record.json      the trajectories' specs, settings, code version, device and time
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from bench.io import atomic_write_text
from bench.reporting.figure import save_png

FIELDS = ["model", "dataset", "along", "estimator", "update", "group", "parameters",
          "replicates", "variance", "snr", "mean_norm", "bound", "bias", "bias_se", "cosine",
          "scale"]
GROUP_WORDS = {"inference": "inference network Q", "model": "model P"}


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}g}"


def variance_csv(rows: list[dict], command: str) -> str:
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=FIELDS + ["command"], lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "command": command})
    return stream.getvalue()


def variance_markdown(rows: list[dict], command: str, provenance: dict) -> str:
    lines = ["# Gradient variance along one trajectory", "",
             f"- Command: `{command}`"]
    for trajectory in provenance.get("trajectories", []):
        reference, settings = trajectory["reference"], trajectory["settings"]
        lines.append(f"- {reference['model']} on {reference['dataset']}: the trajectory of "
                     f"`{reference['algorithm']}` (seed {reference['seed']}, "
                     f"{reference['optimizer']}, minibatch {reference['batch_size']}), "
                     f"{settings['updates']:,} updates; {settings['replicates']} gradient "
                     f"estimates per estimator at updates {trajectory['checkpoints']}")
    code = provenance.get("code", {})
    lines += [f"- Code: {str(code.get('commit'))[:12]}" + (" (uncommitted changes)"
                                                           if code.get("dirty") else ""),
              f"- Device: {provenance.get('environment', {}).get('device', '?')}",
              "- variance: the mean over parameters of the per-parameter variance of the update "
              "direction (-grad of the estimator's loss, summed over the minibatch) over noise "
              "replicates, on one minibatch fixed per checkpoint and common to all estimators; "
              "SNR: the mean over parameters of |mean| / standard deviation; bias: "
              "||mean - exact|| / ||exact|| against the exact gradient of the estimator's "
              "objective (tiny models only), beside its Monte Carlo floor sqrt(sum var / M) / "
              "||exact||. Pure noise has an SNR near sqrt(2/pi)/sqrt(M) (0.10 at M = 64 "
              "replicates): values near it say the mean is not resolved, and more --replicates "
              "would be needed. Variance normalisation (NVIL) and the wake-sleep family rescale "
              "or change the inference update, so compare their inference variance by SNR, "
              "which is scale-free", ""]
    for model in dict.fromkeys(row["model"] for row in rows):
        mine = [row for row in rows if row["model"] == model]
        updates = sorted({row["update"] for row in mine})
        estimators = list(dict.fromkeys(row["estimator"] for row in mine))
        lines += [f"## {model}", ""]
        for group in GROUP_WORDS:
            lines += [f"Variance of the {GROUP_WORDS[group]}'s update:", "",
                      "| Estimator | " + " | ".join(f"update {u:,}" for u in updates) + " |",
                      "|---|" + "---|" * len(updates)]
            for estimator in estimators:
                values = {row["update"]: row["variance"] for row in mine
                          if row["estimator"] == estimator and row["group"] == group}
                lines.append(f"| {estimator} | "
                             + " | ".join(_number(values.get(u)) for u in updates) + " |")
            lines.append("")
        last = updates[-1]
        lines += [f"At update {last:,}:", "",
                  "| Estimator | Group | Variance | SNR | Bias | Bias floor | Cosine | "
                  "Training bound |", "|---|---|---|---|---|---|---|---|"]
        for estimator in estimators:
            for row in mine:
                if row["estimator"] == estimator and row["update"] == last:
                    lines.append(
                        f"| {estimator} | {row['group']} | {_number(row['variance'])} | "
                        f"{_number(row['snr'])} | {_number(row.get('bias'))} | "
                        f"{_number(row.get('bias_se'))} | {_number(row.get('cosine'), 4)} | "
                        f"{_number(row.get('bound'), 5)} |")
        lines.append("")
    return "\n".join(lines)


def draw_variance(rows: list[dict], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(row["model"] for row in rows))
    estimators = list(dict.fromkeys(row["estimator"] for row in rows))
    fig, axes = plt.subplots(len(GROUP_WORDS), len(models), figsize=(5.5 * len(models), 8),
                             squeeze=False)
    colours = plt.get_cmap("tab10")
    for column, model in enumerate(models):
        for line, group in enumerate(GROUP_WORDS):
            axis = axes[line][column]
            for number, estimator in enumerate(estimators):
                points = sorted((row["update"], row["variance"]) for row in rows
                                if row["model"] == model and row["group"] == group
                                and row["estimator"] == estimator
                                and row["variance"] is not None and row["variance"] > 0)
                if points:
                    axis.plot([u for u, _ in points], [v for _, v in points], marker="o",
                              markersize=3, color=colours(number % 10),
                              linestyle="-" if number < 10 else "--", label=estimator)
            axis.set_yscale("log")
            axis.set_xscale("symlog", linthresh=10)
            axis.set_xlabel("parameter updates along the trajectory (symlog)")
            axis.set_ylabel(f"gradient variance, {GROUP_WORDS[group]} (log)")
            axis.set_title(model)
            axis.grid(alpha=0.3)
            axis.legend(fontsize="x-small")
    fig.suptitle(f"Gradient variance along one trajectory\n{subtitle}", fontsize="medium")
    save_png(fig, path, dpi=110)

def write_variance_report(rows: list[dict], out_dir: Path, command: str,
                          provenance: dict) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "variance.csv", out_dir / "variance.md", out_dir / "variance.png",
             out_dir / "record.json"]
    atomic_write_text(files[0], variance_csv(rows, command))
    atomic_write_text(files[1], variance_markdown(rows, command, provenance))
    alongs = ", ".join(dict.fromkeys(row["along"] for row in rows))
    draw_variance(rows, files[2], f"along {alongs} (the command is in variance.md)")
    atomic_write_text(files[3], json.dumps({**provenance, "command": command, "rows": len(rows)},
                                           indent=2) + "\n")
    return files
