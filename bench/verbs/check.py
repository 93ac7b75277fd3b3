"""`python -m bench check ALGORITHM`: the exact-enumeration bias check, for any algorithm."""

from __future__ import annotations

import json

from bench.verbs.common import parse_assignments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check", help="test an algorithm's updates against exact gradients on a tiny model",
        description="Averages the algorithm's updates over many steps on a tiny float64 model and "
                    "compares them with exact gradients computed by enumeration (a z-score test). "
                    "Exits 1 when it finds a bias.")
    parser.add_argument("algorithm", help="algorithm, optionally with a preset: nvil, nvil:none, "
                                          "wake-sleep (see `python -m bench list`), or "
                                          "package.module:Class[:PRESET]")
    parser.add_argument("--model", default=None,
                        help="tiny model (at most 20 latents) over 5 pixels; default: the "
                             "algorithm's check_model (sbn:2-3 unless it names another)")
    parser.add_argument("--inference", default="factorial", help="factorial or autoregressive")
    parser.add_argument("--steps", type=int, default=None,
                        help="number of updates to average (default: the algorithm's check_steps)")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="algorithm option")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from algorithms import parse_name
    from bench.check import default_steps_for, run_bias_check
    from bench.errors import UserError
    from models import MAX_EXACT_LATENTS, ModelSpec

    cls, _ = parse_name(args.algorithm)  # unknown names fail before any work
    model = args.model or cls.check_model
    spec = ModelSpec.parse(model, inference=args.inference)
    if spec.num_latents > MAX_EXACT_LATENTS or spec.data_kind != "binary":
        raise UserError(f"the bias check enumerates latents and pixels: use a binary model with at "
                        f"most {MAX_EXACT_LATENTS} latent units, e.g. sbn:2-3 (got {model})")
    if args.steps is not None and args.steps < 2:
        raise UserError("--steps must be at least 2")
    steps = args.steps or default_steps_for(args.algorithm)
    report = run_bias_check(args.algorithm, spec.name, steps, args.batch_size, args.seed,
                            parse_assignments(args.set), inference=args.inference)
    if args.json:
        payload = dataclasses.asdict(report) | {"biased": report.biased}
        print(json.dumps(payload, indent=2))
    else:
        print("\n".join(report.lines()))
    return 1 if report.biased else 0
