"""Argument helpers shared by several verbs.

Every verb that trains or evaluates (train, eval, run) takes the same compute options, defined
here once (`add_run_options`, with the data root) and checked before any work:

    --threads N     torch threads (torch.set_num_threads); at least 1. `run` sets it in each of
                    its processes, cores // jobs by default
    --device D      cpu (the default) or cuda; cuda without a CUDA device is an error at once
    --no-progress   no progress bars (tqdm)

`train` and `eval` call `apply_compute_options`; `run` calls `check_compute_options` and then
`set_threads` in every process it trains in.
"""

from __future__ import annotations

from bench.errors import UserError, unknown_name

NO_CUDA = "--device cuda was asked for but torch sees no CUDA device; use --device cpu"


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; a malformed item is a UserError."""
    assignments = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"malformed --set {item!r}: write --set key=value, e.g. --set smoothing=0.9")
        assignments[key.strip()] = value.strip()
    return assignments


def add_compute_options(parser) -> None:
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's default; for run, cores // jobs per "
                             "process). At minibatches of 20 one thread is often as fast, and on a "
                             "machine where another process holds a core, 1 can be several times "
                             "faster than 2")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_run_options(parser) -> None:
    """The data root and the compute options: what every verb that trains or evaluates takes."""
    parser.add_argument("--data-dir", default=None,
                        help="data root (default: $BENCH_DATA, else a per-user cache directory)")
    add_compute_options(parser)


def check_compute_options(args) -> None:
    """Reject a bad --threads or --device before any work (a UserError: one line, exit 2)."""
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    if args.device is not None:
        from bench.specs import DEVICES

        if args.device.split(":")[0] not in DEVICES:
            raise unknown_name("device", args.device, DEVICES)
        if args.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UserError(NO_CUDA)


def set_threads(threads: int | None) -> None:
    """torch.set_num_threads, unless None (torch's default). Also a process pool's initializer."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def apply_compute_options(args, threads: int | None = None) -> bool:
    """Check the compute options and set the threads (`threads` if given, else --threads).
    Returns whether progress bars are shown."""
    check_compute_options(args)
    set_threads(threads if threads is not None else args.threads)
    return not args.no_progress
