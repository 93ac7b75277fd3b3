"""Performance tracking across commits and machines: the ratio history, its plot, the committed
baseline of ratios and the gate that compares a run with it.

Only ratios to the yardsticks are kept and compared: absolute times move with the machine and
with its other jobs, a ratio to a yardstick measured in the same run, interleaved, hardly does.

    history   results/perf/history.csv, one row per benchmark and `bench perf --record` run:
              commit, date, benchmark, kind, yardstick, ratio, threads, device, machine
              (HISTORY_FIELDS); history.png beside it plots each benchmark's ratio across commits,
              one panel per yardstick (and one for the evaluation).
    baseline  bench/perf/ratio_baseline.json: each benchmark's ratio to its yardstick, written by
              `python -m bench perf --write-baseline` (BASELINE_COMMAND) with the gate's
              settings, and the settings and machine it was measured with; with --keep-lower,
              the lower of the file's ratio and the new one (a baseline for several loads).
    gate      `python -m bench perf --check` (what .ci/run calls) fails when a benchmark's ratio
              falls more than TOLERANCE (25%) below the baseline's ratio for it (for the 16-run
              benchmarks: and relative to their products ceiling too); the ceilings, which run
              no code of the suite, are reported and not gated.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

HISTORY_FILE = "history.csv"
HISTORY_PLOT = "history.png"
HISTORY_FIELDS = ("commit", "date", "benchmark", "kind", "yardstick", "ratio", "threads", "device",
                  "machine")
BASELINE_PATH = Path(__file__).resolve().parent / "ratio_baseline.json"
BASELINE_COMMAND = "python -m bench perf --write-baseline"
BASELINE_SCHEMA_VERSION = 1
COMPILED_SUFFIX = "(torch.compile)"  # bench.perf.benchmarks.compiled_name
TOLERANCE = 0.25  # a ratio more than this fraction below the baseline's fails the gate


# -- the machine -----------------------------------------------------------------------------------

def machine_label() -> str:
    """Host name, CPU model and number of CPUs, e.g. 'vm: Intel(R) Xeon(R) ... @ 2.50GHz, 2 cpus'."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return f"{platform.node() or 'unknown'}: {model}, {os.cpu_count()} cpus"


# -- history ---------------------------------------------------------------------------------------

def history_rows(result: dict) -> list[dict]:
    """One history row per benchmark of a `bench perf` result (not the yardsticks: theirs is 1)."""
    code = result["code"]
    commit = code.get("commit") or "unknown"
    if code.get("dirty"):
        commit += "+dirty"
    return [{"commit": commit, "date": result["started"], "benchmark": entry["name"],
             "kind": entry["kind"], "yardstick": entry["yardstick"], "ratio": f"{entry['ratio_to_yardstick']:.4g}",
             "threads": result["threads"], "device": result["device"],
             "machine": result["machine"]}
            for entry in result["benchmarks"]]


def append_history(path: Path, rows: list[dict]) -> None:
    """Append rows to the history CSV, writing its header first if the file is new or empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def read_history(path: Path) -> list[dict]:
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def plot_history(history_path: Path, plot_path: Path) -> Path:
    """Each benchmark's ratio to its yardstick across the recorded runs (in the order recorded,
    labelled by commit), one panel per yardstick. Written with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = read_history(history_path)
    runs = list(dict.fromkeys((row["commit"], row["date"]) for row in rows))  # recorded order
    position = {run: index for index, run in enumerate(runs)}

    def panel(row) -> str:
        # The evaluation's ratio is a hundred times smaller than the updates': a panel of its own.
        if row.get("kind") == "evaluation":
            return f"{row['yardstick']}, evaluation"
        return row["yardstick"]

    yardsticks = list(dict.fromkeys(panel(row) for row in rows)) or ["(no runs recorded)"]
    figure, axes = plt.subplots(len(yardsticks), 1, squeeze=False,
                                figsize=(11, 2.6 + 2.4 * len(yardsticks)))
    for axis, yardstick in zip(axes[:, 0], yardsticks, strict=True):
        series: dict[str, list[tuple[int, float]]] = {}
        for row in rows:
            if panel(row) == yardstick:
                point = (position[(row["commit"], row["date"])], float(row["ratio"]))
                series.setdefault(row["benchmark"], []).append(point)
        for name, points in series.items():
            xs, ys = zip(*sorted(points), strict=True)
            axis.plot(xs, ys, marker="o", markersize=3, linewidth=1, label=name)
        axis.set_title(f"ratio to the yardstick {yardstick}", fontsize=9)
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
        axis.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_ylabel("× yardstick", fontsize=8)
        if not yardstick.endswith("evaluation"):
            axis.axhline(1.0, color="grey", linewidth=0.5)
        axis.set_xticks(range(len(runs)))
        axis.set_xticklabels([f"{commit[:8]}\n{date[:10]}" for commit, date in runs], fontsize=6)
        axis.tick_params(axis="y", labelsize=7)
        if series:
            axis.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.suptitle("bench perf --record: examples/s as a multiple of the yardstick, per commit",
                    fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    plot_path = Path(plot_path)
    temporary = plot_path.with_name(f".{plot_path.name}.tmp.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, plot_path)
    return plot_path


# -- the baseline and the gate ---------------------------------------------------------------------

def baseline_payload(result: dict, previous: dict | None = None) -> dict:
    """The committed baseline: every benchmark's ratio to its yardstick in `result`. With a
    `previous` baseline (--write-baseline --keep-lower), each ratio is the lower of the two: a
    baseline measured under several loads, which fails the gate only on what is slow under all of
    them; the benchmarks `result` did not measure (--only) keep their previous ratios."""
    ratios = {entry["name"]: round(entry["ratio_to_yardstick"], 4)
              for entry in result["benchmarks"]}
    measured = {key: result.get(key) for key in ("started", "command", "code", "cpu_per_wall")}
    measurements = [measured]
    yardsticks = {entry["name"]: entry["yardstick"] for entry in result["benchmarks"]}
    if previous is not None:
        # A benchmark this run did not measure (--only) keeps the previous baseline's ratio.
        ratios = {**previous["ratios"],
                  **{name: min(value, previous["ratios"].get(name, value))
                     for name, value in ratios.items()}}
        yardsticks = {**previous.get("yardsticks", {}), **yardsticks}
        earlier = previous.get("measurements") or [
            {key: previous.get(key) for key in ("started", "command", "code", "cpu_per_wall")}]
        measurements = [*earlier, measured]
    return {
        "schema_version": BASELINE_SCHEMA_VERSION,
        "what": "each benchmark's examples/s as a ratio to its yardstick's, measured in the same "
                "run (interleaved, median over repeats); `python -m bench perf --check` fails "
                f"when a ratio falls more than {TOLERANCE:.0%} below the one here"
                + ("; each ratio is the lowest of the measurements listed" if previous else ""),
        "regenerate": BASELINE_COMMAND,
        "command": result["command"],
        "started": result["started"],
        "code": result["code"],
        "threads": result["threads"],
        "device": result["device"],
        "machine": result["machine"],
        "settings": {key: result["settings"][key] for key in ("repeats", "seconds", "threads")},
        "cpu_per_wall": result.get("cpu_per_wall"),
        "measurements": measurements,
        "ratios": ratios,
        "yardsticks": yardsticks,
    }


def read_baseline(path: Path = BASELINE_PATH) -> dict:
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class GateRow:
    benchmark: str
    ratio: float | None          # this run's (None: not measured in this run)
    baseline: float | None       # the baseline's (None: new, not gated)
    tolerance: float
    gated: bool = True           # False: reported only (the ceilings: no code of the suite)
    ceiling_ratio: float | None = None     # this run's ratio of the products ceiling the
    ceiling_baseline: float | None = None  # benchmark streams alike (16 runs), and the baseline's

    @property
    def change(self) -> float | None:
        if self.ratio is None or self.baseline is None:
            return None
        return self.ratio / self.baseline - 1

    @property
    def change_against_ceiling(self) -> float | None:
        """The change of the benchmark's speed relative to its products ceiling's: what is left of
        `change` once what slowed the machine's products alike (memory bandwidth shared with a
        neighbour) is taken out. None without a ceiling."""
        if None in (self.ratio, self.baseline, self.ceiling_ratio, self.ceiling_baseline):
            return None
        return (self.ratio / self.ceiling_ratio) / (self.baseline / self.ceiling_baseline) - 1

    @property
    def failed(self) -> bool:
        """Slower than the baseline relative to the yardstick by more than the tolerance, and,
        where the benchmark has a products ceiling, relative to that ceiling too: a slower
        update of the suite's is slower against both, a starved machine's products slow the
        ceiling as much as the benchmark."""
        change, against_ceiling = self.change, self.change_against_ceiling
        return (self.gated and change is not None and change < -self.tolerance
                and (against_ceiling is None or against_ceiling < -self.tolerance))

    @property
    def verdict(self) -> str:
        if self.baseline is None:
            return "new (not in the baseline)"
        if self.ratio is None:
            return "not measured"
        if not self.gated:
            return "not gated"
        if self.failed:
            return "SLOWER"
        if self.change is not None and self.change < -self.tolerance:
            return "ok (its products ceiling slowed as much: the machine)"
        return "ok"


CEILING_PREFIX = "ceiling:"


def gated(name: str) -> bool:
    """The ceilings are plain PyTorch products on random tensors: no code of the suite runs in
    them, so a drop can only be the machine or the library (the 16-run ones lose up to 30% when a
    neighbour shares the memory bandwidth). They are reported beside the gate, not gated; so is
    the torch.compile experiment, whose speed depends on the machine's C++ compiler."""
    return not name.startswith(CEILING_PREFIX) and not name.endswith(COMPILED_SUFFIX)


def gate(ratios: dict[str, float], baseline: dict[str, float],
         tolerance: float = TOLERANCE, ceilings: dict[str, str] | None = None) -> list[GateRow]:
    """Every benchmark of the run and of the baseline, compared: a row fails when its ratio is more
    than `tolerance` (a fraction) below the baseline's ratio (ceilings excepted: `gated`) and, for
    a benchmark that `ceilings` maps to its products ceiling, also relative to that ceiling."""
    ceilings = ceilings or {}

    def row(name: str) -> GateRow:
        ceiling = ceilings.get(name)
        return GateRow(name, ratios.get(name), baseline.get(name), tolerance, gated(name),
                       ratios.get(ceiling) if ceiling else None,
                       baseline.get(ceiling) if ceiling else None)

    return [row(name) for name in dict.fromkeys([*ratios, *baseline])]


def gate_failures(rows: list[GateRow]) -> list[GateRow]:
    return [row for row in rows if row.failed]


def gate_report(rows: list[GateRow]) -> str:
    def ratio(value):
        return "–" if value is None else f"{value:#.3g}"

    def percent(value):
        return "–" if value is None else f"{value:+.0%}"

    header = ["benchmark", "ratio", "baseline", "change", "vs ceiling", "verdict"]
    table = [header] + [[row.benchmark, ratio(row.ratio), ratio(row.baseline),
                         percent(row.change), percent(row.change_against_ceiling), row.verdict]
                        for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for index, line in enumerate(table):
        cells = [line[0].ljust(widths[0])] + [cell.rjust(width) for cell, width
                                              in zip(line[1:5], widths[1:5], strict=True)] + [line[5]]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
