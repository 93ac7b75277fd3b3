"""`python -m bench <verb>`: every verb registers a subparser here.

A verb module exposes `add_parser(subparsers)` which sets `func` on its parser; `func(args)`
returns an exit status. A `UserError` anywhere becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench.errors import UserError
from bench.memory import keep_freed_memory

# Verb modules, in the order `--help` lists them. Each is imported lazily so that
# `python -m bench data ...` does not pay for importing torch-heavy modules it never uses.
VERB_MODULES = [
    "bench.verbs.data",
    "bench.verbs.list",
    "bench.verbs.check",
    "bench.verbs.train",
    "bench.verbs.eval",
    "bench.verbs.run",
    "bench.verbs.report",
    "bench.verbs.perf",
    "bench.verbs.variance",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark suite for NVIL, wake-sleep and their successors on sigmoid belief networks.",
    )
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for module_name in VERB_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    keep_freed_memory()  # see bench/memory.py: evaluation is much faster without page faults
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything already written is intact (run the same command to resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
