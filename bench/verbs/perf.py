"""`python -m bench perf`: throughput of every registered algorithm on every model family, as
ratios to plain-PyTorch yardsticks measured in the same run; the ratio history, and the CI gate.

Prints and records (results/perf/perf.json and perf.md, written atomically) updates/s and
examples/s of one full training update of each algorithm on sbn:200, sbn:200-200-200, fdarn:200,
sbn:200 with an autoregressive inference network, doc-sbn:50, doc-fdarn:50 and gauss:200 (Adam at
1e-3, runs and yardstick alike) at minibatch 20, of
16 runs trained together, of the matrix products alone of an NVIL update (the ceiling, for 1 and
16 runs), and examples/s of the importance-sampled bound with K=5000 on sbn:200 (with the
projected time for the 10,000 MNIST test images); and the ratio of each to the yardstick of its
architecture, the NVIL update of that architecture written in plain PyTorch. Yardsticks and
candidates are interleaved and the figures are medians over repeats, so that other load on the
machine affects both sides of every ratio (bench/perf/benchmarks.py says exactly how). The data is
random, of the real datasets' shapes: nothing is read from disk.

    --record          also append the run's ratios to results/perf/history.csv and plot them across
                      commits in results/perf/history.png (bench/perf/tracking.py)
    --check           the CI gate: a short run (about a minute on 2 cores) compared with the
                      committed ratio baseline, bench/perf/ratio_baseline.json; exit status 1 when a
                      ratio is more than 25% below the baseline's, after re-measuring the slow ones
    --write-baseline  measure with the gate's settings and write that baseline
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.errors import UserError, unknown_name

DEFAULT_OUT_DIR = Path("results/perf")
JSON_FILE = "perf.json"
MARKDOWN_FILE = "perf.md"
SCHEMA_VERSION = 2
DEVICES = ("cpu", "cuda")
# (repeats, seconds per measurement, examples per call of the iw bound)
FULL = (5, 1.0, 5)
QUICK = (3, 0.02, 1)
GATE = (3, 0.25, 1)           # --check
WRITE_BASELINE = (5, 0.25, 1)  # --write-baseline: the gate's measurements, more repeats
GATE_THREADS = 1  # one torch thread: its ratios move far less with other jobs than two threads'
CONFIRM_REPEATS = 5  # --check re-measures the benchmarks that failed, this many repeats


class _ArgumentProblem(Exception):
    pass


class OneLineErrorParser(argparse.ArgumentParser):
    """The perf verb's parser. argparse answers a bad option with its usage and an error and exits;
    here the problem is kept and raised as a UserError when the verb runs, so the CLI prints one
    line and exits with status 2 like every other user mistake. Unknown options, which argparse
    hands back to the top-level parser, are caught the same way."""

    def error(self, message):
        raise _ArgumentProblem(message)

    def parse_known_args(self, args=None, namespace=None):
        try:
            namespace, extras = super().parse_known_args(args, namespace)
        except _ArgumentProblem as problem:
            return argparse.Namespace(func=_failing(f"bench perf: {problem}")), []
        if extras:
            message = (f"bench perf: unrecognized arguments: {' '.join(extras)} "
                       f"(see python -m bench perf --help)")
            return argparse.Namespace(func=_failing(message)), []
        return namespace, extras


def _failing(message: str):
    def fail(args):
        raise UserError(message)
    return fail


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "perf", help="throughput of every algorithm, as ratios to plain-PyTorch NVIL yardsticks",
        description="Measure updates/s and examples/s of one training update of every registered "
                    "algorithm on every model family (sbn:200, sbn:200-200-200, fdarn:200, "
                    "sbn:200 with autoregressive inference, doc-sbn:50, doc-fdarn:50, gauss:200) at "
                    "minibatch "
                    "20, of 16 runs together, of the matrix products alone of an NVIL update (the "
                    "ceiling for 1 and 16 runs), and of the iw bound with K=5000 on sbn:200, each "
                    "as a ratio to the plain-PyTorch NVIL update of its architecture measured in "
                    "the same run (interleaved, medians of repeats). Random data of MNIST's and "
                    "20 Newsgroups' shapes.")
    parser.__class__ = OneLineErrorParser  # bad options: one line and exit status 2, see above
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's default, usually the number of "
                             f"cores; --check: the baseline's, {GATE_THREADS}). At minibatch 20 "
                             "one thread is often as fast, and much faster on a busy machine")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"interleaved rounds; medians are taken over them (default {FULL[0]}, "
                             f"--quick {QUICK[0]}, --check {GATE[0]})")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"time per measurement (default {FULL[1]:g}, --quick {QUICK[1]:g}, "
                             f"--check {GATE[1]:g})")
    parser.add_argument("--out", default=None,
                        help=f"where {JSON_FILE} and {MARKDOWN_FILE} (and with --record the "
                             f"history) go (default {DEFAULT_OUT_DIR}; --check and "
                             f"--write-baseline write them only when --out is given)")
    parser.add_argument("--only", action="append", metavar="TEXT",
                        help="only the benchmarks whose name contains TEXT (repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny measurement, for tests: a check that it runs, "
                             "not a figure to quote")
    parser.add_argument("--record", action="store_true",
                        help="append this run's ratios to history.csv in the output directory "
                             "and plot them across commits (history.png)")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--check", action="store_true",
                       help="the CI gate: a short run compared with the ratio baseline; exit "
                            "status 1 if a ratio falls more than 25%% below the baseline's")
    modes.add_argument("--write-baseline", action="store_true",
                       help="measure with the gate's settings and write the ratio baseline")
    parser.add_argument("--keep-lower", action="store_true",
                        help="with --write-baseline: keep, for each benchmark, the lower of the "
                             "existing baseline's ratio and the new one (measure under several "
                             "loads; the gate then fails only what is slow under all of them)")
    parser.add_argument("--baseline", default=None,
                        help="the ratio baseline of --check and --write-baseline (default "
                             "bench/perf/ratio_baseline.json)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress lines on stderr")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(func=run)


def mode(args) -> str:
    if args.check:
        return "check"
    if args.write_baseline:
        return "write-baseline"
    return "quick" if args.quick else "full"


def settings_from_args(args, baseline: dict | None = None) -> dict:
    current = mode(args)
    if args.keep_lower and current != "write-baseline":
        raise UserError("--keep-lower goes with --write-baseline")
    if args.quick and current in ("check", "write-baseline"):
        raise UserError(f"--quick and --{current} do not go together: --{current} sets its own "
                        f"durations")
    repeats, seconds, examples = {"full": FULL, "quick": QUICK, "check": GATE,
                                  "write-baseline": WRITE_BASELINE}[current]
    repeats = args.repeats if args.repeats is not None else repeats
    seconds = args.seconds if args.seconds is not None else seconds
    threads = args.threads
    if threads is None and current == "check":
        threads = (baseline or {}).get("settings", {}).get("threads") or GATE_THREADS
    if threads is None and current == "write-baseline":
        threads = GATE_THREADS
    if args.device.split(":")[0] not in DEVICES:
        raise unknown_name("device", args.device, DEVICES)
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    if repeats < 1:
        raise UserError(f"--repeats must be at least 1, got {repeats}")
    if not seconds > 0:
        raise UserError(f"--seconds must be a positive number, got {seconds}")
    return {"device": args.device, "threads": threads, "repeats": repeats,
            "seconds": seconds, "warmup_seconds": seconds, "evaluation_examples": examples,
            "quick": args.quick, "mode": current, "only": args.only or []}


def command_line(args, settings) -> str:
    parts = ["python", "-m", "bench", "perf"]
    for flag in ("quick", "check", "write_baseline", "keep_lower", "record"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    parts += ["--device", settings["device"]]
    if settings["threads"] is not None:
        parts += ["--threads", str(settings["threads"])]
    parts += ["--repeats", str(settings["repeats"]), "--seconds", f"{settings['seconds']:g}"]
    for text in settings["only"]:
        parts += ["--only", text]
    if args.out is not None:
        parts += ["--out", args.out]
    if args.baseline is not None:
        parts += ["--baseline", args.baseline]
    return shlex.join(parts)


def _baseline_path(args) -> Path:
    from bench.perf.tracking import BASELINE_PATH

    return Path(args.baseline) if args.baseline else BASELINE_PATH


def _read_baseline(path: Path) -> dict:
    import json

    from bench.perf.tracking import BASELINE_COMMAND

    if not path.is_file():
        raise UserError(f"no ratio baseline at {path}: write one with `{BASELINE_COMMAND}`")
    try:
        baseline = json.loads(path.read_text())
        baseline["ratios"] = {str(k): float(v) for k, v in baseline["ratios"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as problem:
        raise UserError(f"{path} is not a ratio baseline ({problem}); write one with "
                        f"`{BASELINE_COMMAND}`") from None
    return baseline


def run(args) -> int:
    current = mode(args)
    settings_from_args(args)  # before reading the baseline and importing torch: mistakes at once
    baseline = _read_baseline(_baseline_path(args)) if current == "check" or args.keep_lower \
        else None
    settings = settings_from_args(args, baseline)

    import torch

    from bench.io import atomic_write_json, atomic_write_text
    from bench.perf import benchmarks, tracking
    from bench.records import code_version, environment

    if settings["device"].startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if settings["threads"] is not None:
        torch.set_num_threads(settings["threads"])
    writes = args.out is not None or current in ("full", "quick") or args.record
    out_dir = Path(args.out) if args.out is not None else DEFAULT_OUT_DIR

    def report(line: str) -> None:
        if not args.no_progress:
            print(f"bench perf: {line}", file=sys.stderr, flush=True)

    started = datetime.now(UTC)
    device = settings["device"]
    data = {kind: benchmarks.random_data(kind) for kind in ("binary", "counts")}
    candidates = benchmarks.all_benchmarks(device, settings["evaluation_examples"], data,
                                           settings["only"])
    if current == "check":
        # The gate measures what it gates: the baseline's benchmarks (an estimator added since
        # is benchmarked by `bench perf`, and gated once a new baseline includes it).
        candidates = [c for c in candidates if c.name in baseline["ratios"]]
    if not candidates:
        raise UserError(f"no benchmark name contains {' or '.join(map(repr, settings['only']))}"
                        + (" among the baseline's" if current == "check" else ""))
    yardsticks = benchmarks.yardsticks_for(candidates, device, data)
    synchronize = benchmarks.synchronizer(device)
    raw = benchmarks.run_interleaved(yardsticks, candidates, settings["repeats"],
                                     settings["seconds"], settings["warmup_seconds"],
                                     synchronize, report)
    machine = environment(device)
    summary = benchmarks.summarise_run(yardsticks, candidates, raw)
    yardstick_runs = [run for runs in raw.yardsticks.values() for run in runs]
    result = {
        "schema_version": SCHEMA_VERSION,
        "what": "throughput at minibatch 20 (medians over repeats); ratio_to_yardstick: examples/s "
                "over those of the plain-PyTorch NVIL update of the benchmark's architecture "
                "(its 'yardstick') measured just before and after, median over repeats; "
                "ratio_range: the smallest and largest of those ratios (for a yardstick: its "
                "measurements over their median); cpu_per_wall: process CPU time over wall time",
        "started": started.isoformat(timespec="seconds"),
        "command": command_line(args, settings),
        "device": machine["device"],
        "threads": machine["threads"],
        "machine": tracking.machine_label(),
        "environment": machine,
        "code": code_version(),
        "settings": settings,
        "data": benchmarks.DATA_NOTE,
        "cpu_per_wall": (sum(r.cpu_seconds for r in yardstick_runs)
                         / sum(r.wall_seconds for r in yardstick_runs)),
        **summary,
    }

    status = 0
    if current == "check":
        status = _check(result, baseline, candidates, yardsticks, settings, synchronize, report,
                        benchmarks, tracking)
    result["seconds"] = (datetime.now(UTC) - started).total_seconds()
    json_path, markdown_path = out_dir / JSON_FILE, out_dir / MARKDOWN_FILE
    result["files"] = [str(json_path), str(markdown_path)] if writes else []
    if current == "write-baseline":
        path = _baseline_path(args)
        atomic_write_json(path, tracking.baseline_payload(result, baseline))
        result["files"].append(str(path))
    if args.record:
        history = out_dir / tracking.HISTORY_FILE
        tracking.append_history(history, tracking.history_rows(result))
        plot = tracking.plot_history(history, out_dir / tracking.HISTORY_PLOT)
        result["files"] += [str(history), str(plot)]
    if writes:
        atomic_write_json(json_path, result)
        atomic_write_text(markdown_path, markdown(result, out_dir))
    if args.json:
        import json

        print(json.dumps(result, indent=2))
    else:
        print(text(result))
    return status


def _check(result, baseline, candidates, yardsticks, settings, synchronize, report, benchmarks,
           tracking) -> int:
    """Compare the run with the baseline; re-measure the benchmarks that fail (with their
    yardsticks, more repeats) and fail only those that fail again. Adds result['gate']."""
    ratios = {e["name"]: e["ratio_to_yardstick"] for e in result["benchmarks"]}
    ceilings = {e["name"]: e["products_ceiling"] for e in result["benchmarks"]
                if e.get("products_ceiling")}
    only = settings["only"]
    wanted = {name: value for name, value in baseline["ratios"].items()
              if not only or any(text in name for text in only)}
    rows = tracking.gate(ratios, wanted, ceilings=ceilings)
    failed = [row.benchmark for row in tracking.gate_failures(rows)]
    remeasured = {}
    if failed:
        report(f"{len(failed)} benchmark(s) below the baseline's ratio by more than "
               f"{tracking.TOLERANCE:.0%}; measuring them again, {CONFIRM_REPEATS} repeats")
        names = set(failed) | {ceilings[name] for name in failed if name in ceilings}
        again = [c for c in candidates if c.name in names]
        needed = [y for y in yardsticks if any(c.yardstick == y.yardstick for c in again)]
        raw = benchmarks.run_interleaved(needed, again, CONFIRM_REPEATS, settings["seconds"],
                                         settings["warmup_seconds"], synchronize, report)
        second = benchmarks.summarise_run(needed, again, raw)["benchmarks"]
        remeasured = {entry["name"]: entry["ratio_to_yardstick"] for entry in second}
        retried = {row.benchmark: row for row in
                   tracking.gate({**ratios, **remeasured}, wanted, ceilings=ceilings)}
        # A real slow-down is slow both times, a burst of load rarely covers both: a row fails
        # only if it fails in both measurements, and shows the one that fared better.
        rows = [retried[row.benchmark] if row.benchmark in failed and (
                    not retried[row.benchmark].failed or retried[row.benchmark].ratio > row.ratio)
                else row for row in rows]
    failures = tracking.gate_failures(rows)
    machine = baseline.get("machine")
    result["gate"] = {
        "baseline": {key: baseline.get(key) for key in ("started", "command", "code", "threads",
                                                         "machine")},
        "tolerance": tracking.TOLERANCE,
        "rows": [{"benchmark": r.benchmark, "ratio": r.ratio, "baseline": r.baseline,
                  "change": r.change, "gated": r.gated, "ceiling_ratio": r.ceiling_ratio,
                  "ceiling_baseline": r.ceiling_baseline,
                  "change_against_ceiling": r.change_against_ceiling, "verdict": r.verdict}
                 for r in rows],
        "remeasured": remeasured,
        "failed": [r.benchmark for r in failures],
        "note": None if machine == result["machine"] else
        f"baseline measured on {machine}; ratios travel between machines, within noise",
    }
    return 1 if failures else 0


# -- presentation ----------------------------------------------------------------------------------

def _rate(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float) -> str:
    return f"{value:#.3g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _code(code: dict) -> str:
    if not code.get("commit"):
        return "unknown (not a git checkout)"
    return code["commit"][:12] + (" with uncommitted changes" if code["dirty"] else "")


def _rows(result: dict) -> list[list[str]]:
    rows = []
    for entry in [*result["yardsticks"], *result["benchmarks"]]:
        low, high = entry["ratio_range"]
        rows.append([entry["name"], entry["yardstick"], _rate(entry["updates_per_s"]),
                     _rate(entry["examples_per_s"]), _rate(entry.get("model_evaluations_per_s")),
                     _ratio(entry["ratio_to_yardstick"]), f"{_ratio(low)}–{_ratio(high)}"])
    return rows


HEADER = ["benchmark", "yardstick", "updates/s", "examples/s", "model evals/s", "× yardstick",
          "range"]


def _evaluation(result: dict) -> dict | None:
    return next((e for e in result["benchmarks"] if e["kind"] == "evaluation"), None)


def _summary_lines(result: dict) -> list[str]:
    settings, evaluation = result["settings"], _evaluation(result)
    lines = [
        f"device {result['device']}, {result['threads']} torch "
        f"thread{'s' if result['threads'] != 1 else ''}; code "
        f"{_code(result['code'])}; torch {result['environment']['torch']}; "
        f"machine {result['machine']}",
        f"{settings['repeats']} interleaved repeats of {settings['seconds']:g} s per measurement, "
        f"medians; process CPU time / wall time during the yardsticks' measurements: "
        f"{result['cpu_per_wall']:.2f} (on an idle machine about the number of busy threads; "
        f"lower: the process waited for a CPU)",
    ]
    if evaluation is not None:
        lines.append(
            f"iw bound K={evaluation['k']} on the {evaluation['mnist_test_images']:,} MNIST test "
            f"images: projected {_duration(evaluation['projected_mnist_test_seconds'])} at "
            f"{evaluation['examples_per_s']:.2f} examples/s (measured on "
            f"{evaluation['examples_per_call']} example(s) a call)")
    lines.append(f"data: {result['data']}")
    return lines


def _gate_lines(result: dict) -> list[str]:
    from bench.perf.tracking import GateRow, gate_report

    gate = result["gate"]
    baseline = gate["baseline"]
    rows = [GateRow(r["benchmark"], r["ratio"], r["baseline"], gate["tolerance"], r["gated"],
                    r.get("ceiling_ratio"), r.get("ceiling_baseline")) for r in gate["rows"]]
    lines = [f"gate: each ratio against the baseline's (measured {baseline['started']}, code "
             f"{_code(baseline['code'] or {})}, {baseline['threads']} thread(s), "
             f"{baseline['machine']}); fails below -{gate['tolerance']:.0%}", ""]
    lines += gate_report(rows).splitlines()
    lines.append("(ceilings: plain PyTorch products, no code of the suite; reported, not gated. "
                 "vs ceiling: a 16-run benchmark's change relative to the products ceiling it "
                 "streams alike; it fails only if slower against both)")
    if gate["remeasured"]:
        lines.append(f"(measured twice, the better of the two shown: "
                     f"{', '.join(gate['remeasured'])})")
    if gate["note"]:
        lines.append(f"note: {gate['note']}")
    lines.append(f"gate: FAILED, {len(gate['failed'])} benchmark(s) more than "
                 f"{gate['tolerance']:.0%} slower relative to their yardstick than in the "
                 f"baseline" if gate["failed"] else "gate: passed")
    return lines


def text(result: dict) -> str:
    rows = [HEADER, *_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["bench perf: throughput at minibatch 20, and as a multiple of the plain-PyTorch NVIL "
             "yardstick of its architecture measured in the same run"]
    lines += [f"  {line}" for line in _summary_lines(result)]
    lines.append("")
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    if "gate" in result:
        lines += ["", *_gate_lines(result)]
    lines.append("")
    if result["files"]:
        lines.append(f"written: {', '.join(result['files'])}")
    if result["settings"]["quick"]:
        lines.append("(--quick: a check that everything runs; too short to quote)")
    return "\n".join(lines)


def markdown(result: dict, out_dir: Path | None = None) -> str:
    from bench.perf.tracking import HISTORY_PLOT

    lines = ["# Throughput (`python -m bench perf`)", "",
             f"`{result['command']}`, started {result['started']}.", ""]
    lines += [f"- {line}" for line in _summary_lines(result)]
    lines += ["- × yardstick: examples/s divided by those of the yardstick named in its column, "
              "the plain-PyTorch NVIL update of that architecture (bench/perf/yardstick.py), "
              "measured just before and after, median over repeats; range: the smallest and "
              "largest of those ratios (for a yardstick: its measurements relative to their "
              "median)", ""]
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "|".join(["---", "---"] + ["---:"] * (len(HEADER) - 2)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    if "gate" in result:
        lines += ["", "```", *_gate_lines(result), "```"]
    if out_dir is not None and (Path(out_dir) / HISTORY_PLOT).exists():
        lines += ["", "## Ratios across commits (`python -m bench perf --record`)", "",
                  "From `history.csv` beside this file, one row per benchmark and recorded run.",
                  "", f"![ratio to the yardstick per commit]({HISTORY_PLOT})"]
    if result["settings"]["quick"]:
        lines += ["", "(--quick: a check that everything runs; too short to quote)"]
    return "\n".join(lines) + "\n"
