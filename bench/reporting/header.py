"""What every file of a report states first: the suite and the file it was loaded from, the
budget, the seeds, the bound, the runs' statuses, the paper's numbers, the command and the code
version of the records; and the commands that remake the report."""

from __future__ import annotations

import shlex
from pathlib import Path

from bench.reporting.cells import CellResult
from bench.suites import SUITES_DIR, Budget, Suite

METRIC_WORDS = {
    "nll": "test NLL in nats (lower is better)",
    "perplexity": "test perplexity per word, an upper bound (lower is better)",
}


def _is_builtin(suite: Suite) -> bool:
    """Whether the suite was loaded by name from bench/suites/ (rather than from another file)."""
    path = Path(suite.path).resolve()
    return path.parent == SUITES_DIR.resolve() and path.stem == suite.name


def suite_file(suite: Suite) -> str:
    """The file the suite was loaded from: bench/suites/NAME.toml for a suite given by name, else
    the path it was given as."""
    return f"bench/suites/{suite.name}.toml" if _is_builtin(suite) else str(suite.path)


def suite_argument(suite: Suite) -> str:
    """How a command line names the suite: its name, or the path of a file outside bench/suites/."""
    return suite.name if _is_builtin(suite) else str(suite.path)


def canonical_run_command(suite: Suite, budget: str, seeds: int) -> str:
    return shlex.join(["python", "-m", "bench", "run", suite_argument(suite), "--budget", budget,
                       "--seeds", str(seeds)])


def canonical_report_command(suite: Suite, budget: str, seeds: int) -> str:
    return shlex.join(["python", "-m", "bench", "report", suite_argument(suite), "--budget",
                       budget, "--seeds", str(seeds)])


def describe_bound(results: list[CellResult], metric: str, bound: str = "elbo") -> str:
    specs = [r.record["config"]["spec"] for r in results
             if r.record and "spec" in r.record.get("config", {})]
    if bound == "ais":
        chains = "/".join(map(str, sorted({s.get("test_ais_chains") for s in specs} - {None})))
        steps = "/".join(map(str, sorted({s.get("ais_steps") for s in specs} - {None})))
        source = (f"from annealed importance sampling ({chains or '?'} chains of {steps or '?'} "
                  f"distributions, models/ais.py)")
    else:
        ks = sorted({s.get("eval_samples") for s in specs} - {None})
        source = f"from the {'/'.join(map(str, ks)) if ks else '10'}-sample ELBO"
    limits = sorted({r.cell.spec.test_examples for r in results}, key=lambda v: (v is None, v))
    rows = ("the whole test set" if limits == [None]
            else "the first " + "/".join(f"{v:,}" for v in limits if v is not None)
            + " test rows (a smoke budget: not comparable with the paper)")
    return (f"{METRIC_WORDS[metric]}, {source} on {rows}, at the parameters with "
            f"the best validation bound (early stopping)")


def count_statuses(results: list[CellResult]) -> dict[str, int]:
    statuses: dict[str, int] = {}
    for result in results:
        statuses[result.status] = statuses.get(result.status, 0) + 1
    return statuses


def report_header(suite: Suite, budget: Budget, seeds: int, results: list[CellResult],
                  bound: str, command: str) -> list[str]:
    """The lines stating suite, budget, seeds, bound, runs, paper, command and code (in order;
    the throughput table repeats the first three and the command)."""
    commits = sorted({(r.record.get("code") or {}).get("commit") or "unknown"
                      for r in results if r.record})
    dirty = any((r.record.get("code") or {}).get("dirty") for r in results if r.record)
    statuses = count_statuses(results)
    run_command = canonical_run_command(suite, budget.name, seeds)
    header = [
        f"Suite: `{suite.name}` ({suite.reference or suite.title}); file {suite_file(suite)}",
        f"Budget: `{budget.name}`: {budget.describe()}" + (f". {budget.note}" if budget.note else ""),
        f"Seeds: {seeds} (0..{seeds - 1}); ours = mean ± sample standard deviation over the seeds "
        f"that completed (n)",
        f"Bound: {bound}",
        f"Runs: {len(results)} ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))})",
    ]
    if suite.table.paper:
        header.append(f"Paper: results/paper/{suite.table.paper}.csv ({suite.reference}); "
                      f"Δ = ours − paper"
                      + ("; literature rows as quoted in the paper (sources in "
                         "results/paper/README.md)" if suite.table.literature else ""))
    header += [f"Command: `{command}`" + ("" if command.startswith("python -m bench run")
                                          else f" (records from `{run_command}`)"),
               f"Code: {', '.join(c[:12] for c in commits) or 'no records'}"
               + (" (uncommitted changes)" if dirty else "")]
    return header
