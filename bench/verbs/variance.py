"""`python -m bench variance SUITE_OR_RUN`: gradient variance of every estimator along one
trajectory (bench/variance.py), written as CSV, Markdown, a figure and a record.

    SUITE   every model of the suite: the trajectory is the suite's `--along` cell on it (default
            nvil), the compared estimators are the suite's cells on that model, each with its own
            learning rate and options; out: RESULTS/SUITE/BUDGET/variance/, resumable state in
            RUNS/SUITE/BUDGET/variance/
    RUN     a run directory (record.json): its spec is the trajectory, compared with every
            registered estimator at its defaults (or `--estimators`); out: RUN/variance/
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.verbs.common import add_run_options, apply_compute_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "variance", help="gradient variance and SNR of every estimator along one trajectory",
        description="Trains one reference run and, at checkpoints along it, measures every "
                    "estimator's gradient of the same parameters on the same minibatch many "
                    "times (common random numbers): the variance and signal-to-noise ratio per "
                    "parameter group, and the bias against the exact gradient on tiny models. "
                    "Running the same command again continues where it stopped.")
    parser.add_argument("target", help="a suite (name or .toml file) or a run directory")
    parser.add_argument("--budget", default=None,
                        help="the suite's budget whose cells are compared (default: the suite's)")
    parser.add_argument("--along", default=None,
                        help="the estimator whose training run is the trajectory (default: nvil "
                             "for a suite, the run's own for a run directory)")
    parser.add_argument("--estimators", default=None,
                        help="comma-separated estimators to compare (default: the suite's, or "
                             "every registered estimator for a run directory)")
    parser.add_argument("--models", default=None,
                        help="comma-separated models of the suite to measure (default: all)")
    parser.add_argument("--updates", type=int, default=None,
                        help="length of the trajectory (default: the budget's updates, or the "
                             "run's)")
    parser.add_argument("--checkpoints", type=int, default=8,
                        help="log-spaced checkpoints besides update 0 (default 8)")
    parser.add_argument("--replicates", type=int, default=64,
                        help="gradient estimates per estimator and checkpoint (default 64)")
    parser.add_argument("--runs-dir", default="runs", help="where resumable state goes (suites)")
    parser.add_argument("--results-dir", default="results", help="where the report goes (suites)")
    add_run_options(parser)
    parser.set_defaults(func=run)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def _check_estimators(names: list[str]) -> None:
    import algorithms

    for name in names:
        algorithms.parse_name(name)  # unknown names: a UserError listing the valid ones


def run(args) -> int:
    import sys

    from bench.errors import UserError
    from bench.layout import RECORD
    from bench.variance import VarianceSettings

    progress = apply_compute_options(args)
    target = Path(args.target)
    estimators = _names(args.estimators)
    if estimators is not None:
        if not estimators:
            raise UserError("--estimators is empty; give comma-separated names, e.g. nvil,rws")
        _check_estimators(estimators)
    if args.along is not None:
        _check_estimators([args.along])
    command = "python -m bench variance " + " ".join(sys.argv[2:]) if sys.argv[1:2] == [
        "variance"] else "python -m bench variance " + args.target
    if (target / RECORD).exists():
        plans, out_dir = _run_plan(args, target, estimators)
    elif target.is_dir():
        raise UserError(f"{target} is a directory without {RECORD}: give a run directory or a "
                        f"suite name")
    else:
        plans, out_dir = _suite_plan(args, estimators)
    settings = [VarianceSettings(updates=args.updates or plan["updates"],
                                 checkpoints=args.checkpoints, replicates=args.replicates)
                for plan in plans]
    return _measure(plans, settings, out_dir, command, args, progress)


def _run_plan(args, target: Path, estimators):
    import algorithms
    from bench.errors import UserError
    from bench.records import read_record, spec_of_record
    from bench.variance import compared_spec

    record = read_record(target)
    spec = spec_of_record(record, target)
    if args.device:
        spec = dataclasses.replace(spec, device=args.device)
    if args.along is not None:
        spec = compared_spec(spec, args.along, spec.learning_rate)
    if args.models is not None:
        raise UserError("--models selects models of a suite; a run directory has one model")
    names = estimators or list(algorithms.REGISTRY)
    compared = [spec if name == spec.algorithm else compared_spec(spec, name, spec.learning_rate)
                for name in names]
    state = target / "variance"
    return [{"reference": spec, "compared": compared, "updates": spec.updates,
             "state": state / "variance_state.pt"}], state


def _suite_plan(args, estimators):
    from bench import suites
    from bench.errors import UserError, unknown_name
    from bench.layout import report_dir
    from bench.variance import compared_spec

    suite = suites.load(args.target)
    budget = suite.budget(args.budget)
    overrides = {"device": args.device} if args.device else None
    cells = suites.expand(suite, budget.name, 1, overrides)
    models = list(dict.fromkeys(c.spec.model for c in cells))
    chosen = _names(args.models)
    if chosen is not None:
        for model in chosen:
            if model not in models:
                raise unknown_name("model", model, models, f"models of suite {suite.name}")
        models = [m for m in models if m in chosen]
    along = args.along or "nvil"
    plans = []
    for model in models:
        mine = [c.spec for c in cells if c.spec.model == model]
        if estimators is not None:
            picked = [s for s in mine if s.algorithm in estimators]
            missing = [name for name in estimators if name not in {s.algorithm for s in mine}]
            picked += [compared_spec(mine[0], name) for name in missing]
            mine = picked
        references = [s for s in mine if s.algorithm == along]
        reference = references[0] if references else compared_spec(mine[0], along)
        if not mine:
            raise UserError(f"no estimator of suite {suite.name} to compare on {model}")
        plans.append({"reference": reference, "compared": mine, "updates": reference.updates,
                      "state": (Path(args.runs_dir) / suite.name / budget.name / "variance"
                                / suites.run_name(reference) / "variance_state.pt")})
    return plans, report_dir(Path(args.results_dir), suite, budget.name) / "variance"


def _measure(plans, settings, out_dir: Path, command: str, args, progress: bool) -> int:
    import time

    from bench.errors import UserError
    from bench.reporting.variance import write_variance_report
    from bench.variance import Measurer, label, trajectory_variance

    started = time.perf_counter()
    rows = []
    for plan, chosen in zip(plans, settings, strict=True):
        compared = []
        for spec in plan["compared"]:
            try:  # an estimator may refuse a network (ARM on an autoregressive Q): say so, go on
                Measurer.check(spec)
            except UserError as error:
                print(f"skipping {label(spec)} on {spec.model}: {error}")
                continue
            compared.append(spec)
        plan["state"].parent.mkdir(parents=True, exist_ok=True)
        rows += trajectory_variance(plan["reference"], compared, chosen, plan["state"],
                                    data_dir=args.data_dir, progress=progress)
        print(f"{plan['reference'].model}: {len(compared)} estimators measured along "
              f"{plan['reference'].algorithm} at updates {chosen.schedule()}")
    files = write_variance_report(rows, out_dir, command, _provenance(plans, settings, started))
    print(f"variance report: {out_dir}/ ({', '.join(f.name for f in files)})")
    return 0


def _provenance(plans, settings, started: float) -> dict:
    """What the report's record.json says about how its rows were made."""
    import time

    from bench.records import code_version, environment

    return {"kind": "gradient-variance",
            "trajectories": [{"reference": plan["reference"].to_dict(),
                              "compared": [spec.to_dict() for spec in plan["compared"]],
                              "settings": dataclasses.asdict(chosen),
                              "checkpoints": chosen.schedule()}
                             for plan, chosen in zip(plans, settings, strict=True)],
            "code": code_version(), "environment": environment(plans[0]["reference"].device),
            "invocation_wall_time_s": time.perf_counter() - started}  # this command only
