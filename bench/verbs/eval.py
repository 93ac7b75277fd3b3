"""`python -m bench eval RUN --k 5000`: add a tighter bound to a finished run's record.

`--bound ais --steps N [--k CHAINS]`: annealed importance sampling (models/ais.py), K chains of N
temperatures (defaults: 16 chains, 1,000 steps). A record keeps one metric per (split, bound, K)
and, for AIS, per number of steps too: evaluating again with the same key replaces the old entry."""

from __future__ import annotations

from pathlib import Path

from bench.verbs.common import add_run_options, apply_compute_options

#: AIS chains per example unless --k says
DEFAULT_AIS_CHAINS = 16


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a trained run's best parameters again (e.g. the iw bound, K=5000)",
        description="Loads the best parameters of a finished run and adds a metric to its record "
                    "without retraining.")
    parser.add_argument("run", help="run directory (holding record.json and best.pt)")
    parser.add_argument("--k", type=int, default=None,
                        help="number of importance samples (default 5000), or of AIS chains for "
                             "--bound ais (default 16)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="temperatures of each AIS chain, --bound ais only (default 1000)")
    parser.add_argument("--bound", default="iw",
                        help="iw (default), elbo, exact or ais (annealed importance sampling from "
                             "the prior; no inference network): bounds on the model P; star, "
                             "star-unnormalised or star-exact: the geometric-mean model p* of P "
                             "and Q (bidirectional Helmholtz machines), p̃*(x) without its "
                             "normaliser, or exactly on tiny models")
    parser.add_argument("--z2-samples", type=int, default=None, metavar="N",
                        help="samples of P and Q behind the normaliser Z^2 of --bound star "
                             "(default 100,000)")
    parser.add_argument("--split", default="test", help="test (default), valid or train")
    parser.add_argument("--examples", type=int, default=None, metavar="N",
                        help="score the first N rows of the split (default: the rows of the "
                             "record's other metrics of that split, e.g. a budget's test_examples; "
                             "a budget's test_sweep_examples for its sweep)")
    add_run_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from bench import locks
    from bench.records import read_record

    progress = apply_compute_options(args)
    run_dir = Path(args.run)
    read_record(run_dir)  # a missing or unreadable record is an error before any lock is taken
    # Not while another process trains or evaluates the run: it would replace the record.
    with locks.locked([run_dir]):
        return _evaluate(args, run_dir, progress)


def _evaluate(args, run_dir: Path, progress: bool) -> int:
    import dataclasses

    from tqdm import tqdm

    from bench.errors import UserError
    from bench.evaluation import evaluate
    from bench.records import metric_entry, read_record, spec_of_record, write_record
    from bench.training import BEST, build, load_best

    record = read_record(run_dir)
    if args.split not in ("train", "valid", "test"):
        raise UserError(f"unknown split {args.split!r}; valid splits: test, train, valid")
    steps, k = annealing_options(args)
    best_path = run_dir / BEST
    if not best_path.exists():
        raise UserError(f"{best_path} is missing: the run has no best parameters "
                        f"(status {record['status']}); finish training it first")
    spec = spec_of_record(record, run_dir)
    if args.device:
        spec = dataclasses.replace(spec, device=args.device)
    built = build(spec, data_dir=args.data_dir)
    load_best(built, best_path)
    from bench.evaluation import BOUNDS, DEFAULT_AIS_STEPS, DEFAULT_Z2_SAMPLES, z2_seed
    if args.bound not in BOUNDS:
        raise UserError(f"unknown bound {args.bound!r}; valid bounds: {', '.join(BOUNDS)}")
    z2_samples = args.z2_samples if args.z2_samples is not None else DEFAULT_Z2_SAMPLES
    if z2_samples < 2:
        raise UserError("--z2-samples must be at least 2 (the standard error needs two)")
    rows = getattr(built.data, args.split)
    # The same rows as the record's other metrics of this split, so the bounds are comparable.
    limit = {"test": spec.test_examples, "valid": spec.eval_examples}.get(args.split)
    if args.examples is not None:
        if args.examples < 1:
            raise UserError("--examples must be at least 1")
        limit = args.examples
    if limit is not None:
        rows = rows[:limit]
    label = f"{args.bound} K={k}" + (f" steps={steps}" if args.bound == "ais" else "")
    with tqdm(total=rows.shape[0], desc=label, unit="ex", disable=not progress) as bar:
        evaluation = evaluate(built.algorithm.model, built.algorithm.inference, rows, args.bound,
                              k, seed=spec.seed * 1_000_003 - 3, device=built.device,
                              counts=built.data.kind == "counts", progress=bar.update,
                              z2_samples=z2_samples, z2_seed=z2_seed(spec.seed),
                              steps=steps if steps is not None else DEFAULT_AIS_STEPS)
    entry = metric_entry(args.split, evaluation, record.get("best_update"))
    record["metrics"] = [m for m in record["metrics"] if metric_key(m) != metric_key(entry)]
    record["metrics"].append(entry)
    write_record(run_dir, record)
    steps_text = f", {entry['ais_steps']} steps" if "ais_steps" in entry else ""
    line = (f"{args.split} {args.bound} (K={entry['k']}{steps_text}, model {entry['quantity']}): "
            f"NLL {entry['nll']:.2f} nats")
    if "log_z2" in entry:
        line += (f"; log Z^2 = {entry['log_z2']:.3f} ± {entry['log_z2_se']:.3f} "
                 f"({entry['z2_samples']:,} samples)")
    if "perplexity" in entry:
        line += f", perplexity {entry['perplexity']:.1f}"
    print(line)
    print(f"added to {run_dir / 'record.json'}")
    return 0


def annealing_options(args) -> tuple[int | None, int]:
    """(AIS steps or None, K) from --steps and --k, checked before any work: --steps belongs to
    --bound ais, and both must be at least 1."""
    from bench.errors import UserError
    from bench.evaluation import DEFAULT_AIS_STEPS

    if args.bound != "ais":
        if args.steps is not None:
            raise UserError(f"--steps sets the AIS temperatures: it goes with --bound ais, not "
                            f"--bound {args.bound}")
        k = 5000 if args.k is None else args.k
        return None, k
    steps = DEFAULT_AIS_STEPS if args.steps is None else args.steps
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    k = DEFAULT_AIS_CHAINS if args.k is None else args.k
    if k < 1:
        raise UserError(f"--k (the number of AIS chains) must be at least 1, got {k}")
    return steps, k


def metric_key(entry: dict) -> tuple:
    """What one metric of a record is per: split, bound and K, and for AIS the steps."""
    return entry["split"], entry["bound"], entry["k"], entry.get("ais_steps")
