"""`python -m bench list`: every registered algorithm with its presets and the latents it handles,
every model family and dataset.

Algorithms are the suite's own and those of installed packages' entry points (group
`nvil_bench.algorithms`); one that fails to load is listed with its error, and the exit status is 1.
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list algorithms (with presets), models and datasets")
    parser.set_defaults(func=run)


def run(args) -> int:
    import datasets
    from algorithms import registry
    from models import FAMILIES
    from models.specs import DETERMINISTIC_LAYERS, GAUSSIAN_FAMILIES

    status = 0
    print(f"algorithms (use NAME or NAME:PRESET, or any estimator class as {registry.SYNTAX}):")
    for name in registry.short_names():
        problem = registry.entry_point_problem(name)
        if problem is not None and name not in registry.BUILTIN:
            print(f"  {name:<12} error: {problem}")
            status = 1
            continue
        cls = registry.resolve(name)
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        module_doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().splitlines()
        origin = "" if name in registry.BUILTIN else f" [{registry.origin(name)}]"
        print(f"  {name:<12} {summary or (module_doc[0] if module_doc else '')}{origin}")
        presets = [p for p in cls.presets if p]
        if presets:
            print(f"  {'':<12} presets: {', '.join(presets)}")
        print(f"  {'':<12} latents: {', '.join(sorted(cls.latent_kinds))}")
        if problem is not None:  # an entry point shadowed by the suite's own estimator
            print(f"  {'':<12} error: {problem}")
            status = 1
    print("models (FAMILY:SIZES, sizes deepest first; --set inference=autoregressive for Table 2):")
    for family, (visible, autoregressive, single, kind) in FAMILIES.items():
        prior = "autoregressive prior" if autoregressive else "factorial prior"
        layers = "one latent layer" if single else "any number of latent layers"
        latents = "binary latents"
        if family in GAUSSIAN_FAMILIES:
            prior = "N(0, I) prior"
            latents = "Gaussian latents (a size ending in b: binary units)"
        if family in DETERMINISTIC_LAYERS:
            hidden, activation = DETERMINISTIC_LAYERS[family]
            default = (f"default {'-'.join(map(str, hidden))} {activation}" if hidden
                       else "default linear")
            layers += (f"; conditionals are MLPs: {family}:SIZES[/HIDDEN][/ACTIVATION], "
                       f"{default}")
        print(f"  {family:<12} {visible} visibles, {latents}, {prior}, {layers}; data: {kind}")
    print("datasets:")
    for name in datasets.names():
        print(f"  {name:<12} splits: {', '.join(datasets.splits(name))}")
    return status
