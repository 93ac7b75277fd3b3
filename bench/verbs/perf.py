"""`python -m bench perf`: throughput of every registered algorithm, as ratios to a plain-PyTorch
yardstick measured in the same run.

Prints and records (results/perf/perf.json and perf.md, written atomically) updates/s and
examples/s of one full training update of each algorithm on sbn:200, sbn:200-200-200, fdarn:200
and doc-sbn:50 at minibatch 20, examples/s of the importance-sampled bound with K=5000 on sbn:200
(with the projected time for the 10,000 MNIST test images), and the ratio of each to the
yardstick, the NVIL update for sbn:200 written in plain PyTorch. Yardstick and candidates are
interleaved and the figures are medians over repeats, so that other load on the machine affects
both sides of every ratio (bench/perf/benchmarks.py says exactly how). The data is random, of the
real datasets' shapes: nothing is read from disk.
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
SCHEMA_VERSION = 1
DEVICES = ("cpu", "cuda")
# (repeats, seconds per measurement, examples per call of the iw bound): default and --quick
FULL = (5, 1.0, 5)
QUICK = (3, 0.02, 1)


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
        "perf", help="throughput of every algorithm, as ratios to a plain-PyTorch NVIL yardstick",
        description="Measure updates/s and examples/s of one training update of every registered "
                    "algorithm on sbn:200, sbn:200-200-200, fdarn:200 and doc-sbn:50 at minibatch "
                    "20, of 16 runs batched, of the matrix products alone of an NVIL update (the "
                    "ceiling for 1 and 16 runs), and of the iw bound with K=5000 on sbn:200, each "
                    "as a ratio to the "
                    "plain-PyTorch NVIL update for sbn:200 measured in the same run (interleaved, "
                    "medians of repeats). Random data of MNIST's and 20 Newsgroups' shapes.")
    parser.__class__ = OneLineErrorParser  # bad options: one line and exit status 2, see above
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's default, usually the number of "
                             "cores). At minibatch 20 one thread is often as fast, and much faster "
                             "on a busy machine")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"interleaved rounds; medians are taken over them (default {FULL[0]}, "
                             f"--quick {QUICK[0]})")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"time per measurement (default {FULL[1]:g}, --quick {QUICK[1]:g})")
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR),
                        help=f"where {JSON_FILE} and {MARKDOWN_FILE} go (default {DEFAULT_OUT_DIR})")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny measurement, for tests and CI: a check that it runs, "
                             "not a figure to quote")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(func=run)


def settings_from_args(args) -> dict:
    repeats, seconds, examples = QUICK if args.quick else FULL
    repeats = args.repeats if args.repeats is not None else repeats
    seconds = args.seconds if args.seconds is not None else seconds
    if args.device.split(":")[0] not in DEVICES:
        raise unknown_name("device", args.device, DEVICES)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    if repeats < 1:
        raise UserError(f"--repeats must be at least 1, got {repeats}")
    if not seconds > 0:
        raise UserError(f"--seconds must be a positive number, got {seconds}")
    return {"device": args.device, "threads": args.threads, "repeats": repeats,
            "seconds": seconds, "warmup_seconds": seconds, "evaluation_examples": examples,
            "quick": args.quick}


def command_line(args, settings) -> str:
    parts = ["python", "-m", "bench", "perf"]
    if args.quick:
        parts.append("--quick")
    parts += ["--device", settings["device"]]
    if settings["threads"] is not None:
        parts += ["--threads", str(settings["threads"])]
    parts += ["--repeats", str(settings["repeats"]), "--seconds", f"{settings['seconds']:g}"]
    if args.out != str(DEFAULT_OUT_DIR):
        parts += ["--out", args.out]
    return shlex.join(parts)


def run(args) -> int:
    settings = settings_from_args(args)  # before importing torch: mistakes are reported at once

    import torch

    from bench.io import atomic_write_json, atomic_write_text
    from bench.perf import benchmarks
    from bench.records import code_version, environment

    if settings["device"].startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if settings["threads"] is not None:
        torch.set_num_threads(settings["threads"])
    out_dir = Path(args.out)

    def report(line: str) -> None:
        print(f"bench perf: {line}", file=sys.stderr, flush=True)

    started = datetime.now(UTC)
    device = settings["device"]
    yardstick = benchmarks.yardstick_benchmark(device)
    candidates = benchmarks.all_benchmarks(device, settings["evaluation_examples"])
    raw = benchmarks.run_interleaved(yardstick, candidates, settings["repeats"],
                                     settings["seconds"], settings["warmup_seconds"],
                                     benchmarks.synchronizer(device), report)
    machine = environment(device)
    result = {
        "schema_version": SCHEMA_VERSION,
        "what": "throughput at minibatch 20 (medians over repeats); ratio_to_yardstick: examples/s "
                "over those of the plain-PyTorch NVIL sbn:200 update measured just before and "
                "after, median over repeats; ratio_range: the smallest and largest of those ratios "
                "(for the yardstick: its measurements over their median); cpu_per_wall: process "
                "CPU time over wall time",
        "started": started.isoformat(timespec="seconds"),
        "command": command_line(args, settings),
        "device": machine["device"],
        "threads": machine["threads"],
        "environment": machine,
        "code": code_version(),
        "settings": settings,
        "data": benchmarks.DATA_NOTE,
        **benchmarks.summarise_run(yardstick, candidates, raw),
    }
    result["seconds"] = (datetime.now(UTC) - started).total_seconds()
    json_path, markdown_path = out_dir / JSON_FILE, out_dir / MARKDOWN_FILE
    result["files"] = [str(json_path), str(markdown_path)]
    atomic_write_json(json_path, result)
    atomic_write_text(markdown_path, markdown(result))
    if args.json:
        import json

        print(json.dumps(result, indent=2))
    else:
        print(text(result))
    return 0


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
    for entry in [result["yardstick"], *result["benchmarks"]]:
        low, high = entry["ratio_range"]
        rows.append([entry["name"], _rate(entry["updates_per_s"]), _rate(entry["examples_per_s"]),
                     _ratio(entry["ratio_to_yardstick"]), f"{_ratio(low)}–{_ratio(high)}"])
    return rows


HEADER = ["benchmark", "updates/s", "examples/s", "× yardstick", "range"]


def _evaluation(result: dict) -> dict:
    return next(e for e in result["benchmarks"] if e["kind"] == "evaluation")


def _summary_lines(result: dict) -> list[str]:
    settings, evaluation = result["settings"], _evaluation(result)
    yardstick = result["yardstick"]
    return [
        f"device {result['device']}, {result['threads']} torch "
        f"thread{'s' if result['threads'] != 1 else ''}; code "
        f"{_code(result['code'])}; torch {result['environment']['torch']}",
        f"{settings['repeats']} interleaved repeats of {settings['seconds']:g} s per measurement, "
        f"medians; process CPU time / wall time during the yardstick's measurements: "
        f"{yardstick['cpu_per_wall']:.2f} (on an idle machine about the number of busy threads; "
        f"lower: the process waited for a CPU)",
        f"iw bound K={evaluation['k']} on the {evaluation['mnist_test_images']:,} MNIST test images: "
        f"projected {_duration(evaluation['projected_mnist_test_seconds'])} at "
        f"{evaluation['examples_per_s']:.2f} examples/s (measured on "
        f"{evaluation['examples_per_call']} example(s) a call)",
        f"data: {result['data']}",
    ]


def text(result: dict) -> str:
    rows = [HEADER, *_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["bench perf: throughput at minibatch 20, and as a multiple of the plain-PyTorch NVIL "
             "yardstick (sbn:200) measured in the same run"]
    lines += [f"  {line}" for line in _summary_lines(result)]
    lines.append("")
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"written: {', '.join(result['files'])}")
    if result["settings"]["quick"]:
        lines.append("(--quick: a check that everything runs; too short to quote)")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    lines = ["# Throughput (`python -m bench perf`)", "",
             f"`{result['command']}`, started {result['started']}.", ""]
    lines += [f"- {line}" for line in _summary_lines(result)]
    lines += ["- × yardstick: examples/s divided by those of the plain-PyTorch NVIL update for "
              "sbn:200 (bench/perf/yardstick.py) measured just before and after, median over "
              "repeats; range: the smallest and largest of those ratios (for the yardstick: its "
              "measurements relative to their median)", ""]
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    if result["settings"]["quick"]:
        lines += ["", "(--quick: a check that everything runs; too short to quote)"]
    return "\n".join(lines) + "\n"
