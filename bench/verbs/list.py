"""`python -m bench list`: every registered algorithm with its presets, model family and dataset."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list algorithms (with presets), models and datasets")
    parser.set_defaults(func=run)


def run(args) -> int:
    import algorithms
    import datasets
    from models import FAMILIES

    print("algorithms (use NAME or NAME:PRESET):")
    for name, cls in sorted(algorithms.REGISTRY.items()):
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        module_doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().splitlines()
        print(f"  {name:<12} {summary or (module_doc[0] if module_doc else '')}")
        presets = [p for p in cls.presets if p]
        if presets:
            print(f"  {'':<12} presets: {', '.join(presets)}")
    print("models (FAMILY:SIZES, sizes deepest first; --set inference=autoregressive for Table 2):")
    for family, (visible, autoregressive, single, kind) in FAMILIES.items():
        prior = "autoregressive prior" if autoregressive else "factorial prior"
        layers = "one latent layer" if single else "any number of latent layers"
        print(f"  {family:<12} {visible} visibles, {prior}, {layers}; data: {kind}")
    print("datasets:")
    for name in datasets.names():
        print(f"  {name:<12} splits: {', '.join(datasets.splits(name))}")
    return 0
