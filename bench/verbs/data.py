"""`python -m bench data fetch|verify|info`: obtain, check and describe the datasets.

The `datasets` package is imported only when a data action runs, so that building the CLI
parser for other verbs does not pay for numpy and scipy.
"""

from __future__ import annotations

import argparse
import json
import sys

# For help texts only (importing `datasets` here would slow down every verb);
# tests check that it matches datasets.names().
DATASET_NAMES = ("20news", "mnist", "rcv1", "synthetic")
FETCHABLE_NAMES = ("20news", "mnist", "rcv1")

DATA_DIR_HELP = ("data root (default: $BENCH_DATA, else $XDG_CACHE_HOME/nvil-bench or "
                 "~/.cache/nvil-bench); set $BENCH_DATA_MIRROR to a local copy of the upstream "
                 "files to work without network")

FETCH_DESCRIPTION = f"""\
Obtain each dataset's raw files into the data root, verify their sha256, and build the
processed caches, so that later runs load instantly. Files already present and verified are
not downloaded again; a present file that fails verification is reported and left untouched.
Files come from $BENCH_DATA_MIRROR when it is set (as-is or .gz), else from the upstream URLs
(primary first, then fallbacks).

Without NAMEs, fetches {', '.join(FETCHABLE_NAMES)} ('synthetic' is generated on load). A dataset
that cannot be obtained is reported and the others are still fetched: RCV1 has no public
preprocessed copy and needs the LYRL2004 token files or NVDM's ready-made files (see
`datasets/rcv1.py`). Exit status: without NAMEs, 2 if a file fails verification or if nothing
could be fetched, else 0; with NAMEs, 2 if any named dataset failed, else 0."""

VERIFY_DESCRIPTION = f"""\
Hash every raw file in the data root and print one line per file: OK, MISMATCH (expected and
actual sha256), MISSING, or UNCHECKED (ready-made RCV1 files, for which no checksum is
published; their sha256 is shown). Without NAMEs, checks {', '.join(FETCHABLE_NAMES)}.
Exit status 1 on any MISMATCH, and on a MISSING file of a dataset named explicitly; else 0."""

INFO_DESCRIPTION = """\
Load a dataset (fetching it if needed) and print each part's size and statistics: rows and
features; the mean pixel for binary data; total words, mean/min/max document length, nonzeros
and vocabulary size for word counts."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="fetch, verify and describe datasets",
        description=f"Fetch, verify and describe the datasets: {', '.join(DATASET_NAMES)}.")
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", metavar="DIR", default=None, help=DATA_DIR_HELP)

    fetch = actions.add_parser("fetch", parents=[common], help="download (or copy), verify and cache",
                               description=FETCH_DESCRIPTION,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    fetch.add_argument("names", nargs="*", metavar="NAME",
                       help=f"datasets to fetch ({', '.join(DATASET_NAMES)})")
    fetch.set_defaults(func=run_fetch)

    verify = actions.add_parser("verify", parents=[common], help="check every raw file's sha256",
                                description=VERIFY_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.add_argument("names", nargs="*", metavar="NAME",
                        help=f"datasets to verify ({', '.join(DATASET_NAMES)})")
    verify.set_defaults(func=run_verify)

    info = actions.add_parser("info", parents=[common], help="sizes and statistics of each part",
                              description=INFO_DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    info.add_argument("name", metavar="NAME", help=f"dataset ({', '.join(DATASET_NAMES)})")
    info.add_argument("--split", default=None,
                      help="split to describe (default: the dataset's first; mnist has "
                           "'paper' and 'standard', the others only 'paper')")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.set_defaults(func=run_info)

    def print_help(args) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=print_help)


def _validated(names: list[str]) -> list[str]:
    import datasets

    for name in names:
        datasets.splits(name)  # raises the unknown-dataset error listing the valid names
    return list(dict.fromkeys(names))


def run_fetch(args) -> int:
    import datasets
    from bench.errors import UserError

    explicit = bool(args.names)
    names = _validated(args.names) if explicit else datasets.fetchable_names()
    root = datasets.resolve_data_dir(args.data_dir)
    fetched, failed, corrupt = [], [], []
    for name in names:
        if name not in datasets.fetchable_names():
            print(f"{name}: generated on load, nothing to fetch")
            continue
        try:
            paths = datasets.fetch(name, root)
        except datasets.ChecksumMismatchError as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            corrupt.append(name)
        except UserError as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            failed.append(name)
        else:
            print(f"{name}: {len(paths)} raw file(s) verified in {paths[0].parent if paths else root}")
            fetched.append(name)
    if failed or corrupt:
        print(f"fetched: {', '.join(fetched) or 'nothing'}; failed: {', '.join(failed + corrupt)} "
              f"(see above)", file=sys.stderr)
    if explicit:
        return 2 if failed or corrupt else 0
    return 2 if corrupt or not fetched else 0


def run_verify(args) -> int:
    import datasets

    explicit = bool(args.names)
    names = _validated(args.names) if explicit else datasets.fetchable_names()
    root = datasets.resolve_data_dir(args.data_dir)
    mismatch = missing_named = False
    for name in names:
        checks = datasets.check_files(name, root)
        if not checks:
            print(f"{'-':10}{name:10}generated on load, no files")
        for check in checks:
            print(f"{check.status:10}{name:10}{check.path}")
            if check.status == "MISMATCH":
                mismatch = True
                print(f"{'':20}expected sha256 {check.expected_sha256}\n"
                      f"{'':20}actual   sha256 {check.actual_sha256}\n"
                      f"{'':20}delete it and run `python -m bench data fetch {name}`")
            elif check.status == "MISSING":
                missing_named = missing_named or explicit
                print(f"{'':20}run `python -m bench data fetch {name}`")
            elif check.status == "UNCHECKED":
                print(f"{'':20}sha256 {check.actual_sha256} ({check.detail})")
    return 1 if mismatch or missing_named else 0


def run_info(args) -> int:
    import datasets

    data = datasets.load(args.name, args.split, args.data_dir)
    stats = data.statistics()
    if args.json:
        print(json.dumps({
            "name": data.name, "split": data.split, "kind": data.kind,
            "num_features": data.num_features,
            "vocab_size": len(data.vocab) if data.vocab is not None else None,
            "parts": stats, "provenance": data.provenance,
        }, indent=2))
        return 0
    if data.kind == "binary":
        print(f"{data.name}, split {data.split!r} ({data.kind}, {data.num_features:,} features)")
        print(f"{'part':6}{'rows':>10}{'features':>10}{'mean pixel':>12}")
        for part, entry in stats.items():
            print(f"{part:6}{entry['rows']:>10,}{entry['features']:>10,}{entry['mean_pixel']:>12.5f}")
    else:
        print(f"{data.name}, split {data.split!r} ({data.kind}, vocabulary of "
              f"{data.num_features:,} words)")
        print(f"{'part':6}{'docs':>10}{'words':>12}{'mean len':>10}{'min len':>9}{'max len':>9}"
              f"{'nonzeros':>12}{'vocab':>7}")
        for part, entry in stats.items():
            print(f"{part:6}{entry['rows']:>10,}{entry['total_words']:>12,}"
                  f"{entry['mean_length']:>10.2f}{entry['min_length']:>9,}{entry['max_length']:>9,}"
                  f"{entry['nonzeros']:>12,}{entry['vocab_size']:>7,}")
    provenance = data.provenance
    print(f"processing: {provenance.get('processing_version')}; cache: "
          f"{provenance.get('cache_file') or 'none (generated on load)'}")
    for file_name, sha in provenance.get("raw_files", {}).items():
        print(f"raw: {file_name}  sha256 {sha}")
    return 0
