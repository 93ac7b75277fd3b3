"""`python -m bench train`: train one run with the paper's protocol and write its record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.verbs.common import add_run_options, apply_compute_options, parse_assignments

DEFAULT_RUNS_DIR = Path("runs")


def add_parser(subparsers) -> None:
    from bench.specs import RunSpec

    defaults = RunSpec()
    parser = subparsers.add_parser(
        "train", help="train one model with one algorithm (resumes if interrupted)",
        description="Train with the paper's protocol (minibatches of 20, one sample, fixed learning "
                    "rates, early stopping on the 10-sample validation bound). Running the same "
                    "command again resumes from the last checkpoint.")
    parser.add_argument("--algorithm", default=defaults.algorithm,
                        help="NAME or NAME:PRESET, e.g. nvil, nvil:none, wake-sleep (see "
                             "`python -m bench list`), or package.module:Class[:PRESET]")
    parser.add_argument("--model", default=defaults.model, help="e.g. sbn:200, sbn:200-200, fdarn:200, doc-sbn:50")
    parser.add_argument("--dataset", default=defaults.dataset, help="mnist, 20news, rcv1 or synthetic")
    parser.add_argument("--split", default=None, help="dataset split (default: the dataset's default)")
    parser.add_argument("--updates", type=int, default=defaults.updates)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", default=None, help="run directory (default runs/<run name>)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any run setting (learning_rate, optimizer, eval_interval, batch_size, "
                             "inference, eval_examples, test_iw_samples) or algorithm option")
    add_run_options(parser)
    parser.set_defaults(func=run)


def spec_from_args(args):
    from bench.specs import RunSpec, spec_from_assignments

    spec = RunSpec(algorithm=args.algorithm, model=args.model, dataset=args.dataset,
                   split=args.split, updates=args.updates, seed=args.seed)
    spec = spec_from_assignments(spec, parse_assignments(args.set))
    if args.device:
        spec = dataclasses.replace(spec, device=args.device)
    return spec


def run(args) -> int:
    from bench.reporting.console import print_run_summary
    from bench.runs import train_run

    progress = apply_compute_options(args)
    spec = spec_from_args(args)
    out_dir = Path(args.out) if args.out else DEFAULT_RUNS_DIR / spec.run_name()
    record = train_run(spec, out_dir, data_dir=args.data_dir, progress=progress)
    print_run_summary(record, out_dir)
    return 0 if record["status"] == "complete" else 1
