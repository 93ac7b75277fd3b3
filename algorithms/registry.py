"""Estimator names -> classes: the suite's own by short name, other packages' by entry point, and
any importable class by its module path. Nothing outside an estimator's module names it.

The names `--algorithm`, suite files (`algorithm = ...`), `python -m bench check` and
`RunSpec.algorithm` accept:

    NAME[:PRESET]                    a short name: the suite's own (`BUILTIN`: nvil, wake-sleep, reinforce, rws, rloo, vimco, arm, disarm, ...) or
                                     an entry point of group `nvil_bench.algorithms` of an
                                     installed package, e.g. `nvil`, `nvil:none`, `my-estimator:k1`
    package.module:Class[:PRESET]    any importable `Algorithm` subclass, registered nowhere,
                                     e.g. `mypkg.est:MyEstimator`, `mypkg.est:MyEstimator:k1`

Short names are tried first: `nvil:none` is NVIL's preset "none", never a module `nvil`. A text is
read as `module:Class` only when the part before its first colon is no short name, and then the
preset, if any, follows a second colon. The suite's own names win over an entry point of the same
name (`bench list` reports such an entry point as shadowed).

Entry points are read once per process, and loaded (their module imported) only when their name
is resolved or listed. Every failure is one `UserError` line: an unknown name lists the valid
ones; an entry point that fails to load names itself and its package; a class that is not an
`algorithms.base.Algorithm` subclass says so.

`source_info(cls)` is what a record keeps of the estimator's code: module, class, source file and
the sha256 of that file, taken when the class is first resolved (so when it was imported).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Iterator, Mapping

from algorithms.arm import ARM
from algorithms.base import Algorithm
from algorithms.bihm import BiHM
from algorithms.disarm import DisARM
from algorithms.nvil import NVIL
from algorithms.rebar import REBAR
from algorithms.reinforce import Reinforce
from algorithms.relax import RELAX
from algorithms.rloo import RLOO
from algorithms.rws import RWS
from algorithms.short_run import ShortRun
from algorithms.vae import VAE
from algorithms.vimco import VIMCO
from algorithms.wake_sleep import WakeSleep
from bench.errors import UserError, unknown_name

ENTRY_POINT_GROUP = "nvil_bench.algorithms"
#: the suite's own estimators; a new one in algorithms/ is added here
BUILTIN: dict[str, type[Algorithm]] = {cls.name: cls for cls in (
    NVIL, WakeSleep, Reinforce, RWS, RLOO, VIMCO, ARM, DisARM, REBAR, RELAX, BiHM, VAE, ShortRun,
)}
SYNTAX = "package.module:Class[:PRESET]"

_IDENTIFIERS = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_MODULE_CLASS = re.compile(rf"({_IDENTIFIERS}):({_IDENTIFIERS})(?::(.*))?", re.ASCII)


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


@functools.cache
def _entry_points() -> dict[str, tuple[importlib.metadata.EntryPoint, ...]]:
    found: dict[str, list] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, []).append(entry)
    return {name: tuple(entries) for name, entries in found.items()}


def _package(entry) -> str:
    dist = getattr(entry, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


def short_names() -> list[str]:
    """Every short name: the suite's own, then the entry points' (not loaded)."""
    return list(BUILTIN) + sorted(name for name in _entry_points() if name not in BUILTIN)


def split(text: str) -> tuple[str, str]:
    """'nvil:none' -> ('nvil', 'none'); 'pkg.mod:Cls:k1' -> ('pkg.mod:Cls', 'k1'). By syntax and
    the short names alone: nothing is imported."""
    head, _, rest = text.partition(":")
    if head in BUILTIN or head in _entry_points():
        return head, rest
    match = _MODULE_CLASS.fullmatch(text)
    if match:
        return f"{match[1]}:{match[2]}", match[3] or ""
    return head, rest


def _unknown(name: str, detail: str = "") -> UserError:
    return UserError(f"unknown algorithm {name!r}{detail}; valid algorithms: "
                     f"{', '.join(sorted(short_names()))}, or any estimator class as {SYNTAX}")


def check_class(obj, origin: str) -> type[Algorithm]:
    """`obj` if it is an estimator class, else a one-line UserError naming `origin`."""
    if not (inspect.isclass(obj) and issubclass(obj, Algorithm)):
        what = (f"class {obj.__qualname__}" if inspect.isclass(obj)
                else f"{type(obj).__name__} {getattr(obj, '__qualname__', '')}".rstrip())
        raise UserError(f"{origin} is not an estimator: {what} is not a subclass of "
                        f"algorithms.base.Algorithm (see ADDING_AN_ALGORITHM.md)")
    if not isinstance(getattr(obj, "name", None), str):
        raise UserError(f"{origin}: class {obj.__qualname__} declares no `name` (a str)")
    if not dataclasses.is_dataclass(getattr(obj, "Options", None)):
        raise UserError(f"{origin}: class {obj.__qualname__} declares no `Options` dataclass")
    return obj


@functools.cache
def _load_entry_point(name: str) -> type[Algorithm]:
    entries = _entry_points()[name]
    if len(entries) > 1:
        raise UserError(f"entry point {name!r} of group {ENTRY_POINT_GROUP} is declared by "
                        f"{len(entries)} packages ({', '.join(_package(e) for e in entries)}); "
                        f"uninstall all but one")
    entry = entries[0]
    origin = f"entry point {name!r} ({entry.value}) of package {_package(entry)}"
    try:
        obj = entry.load()
    except Exception as error:  # noqa: BLE001 - any failure of third-party code is reported alike
        raise UserError(f"{origin} failed to load: {_one_line(error)}") from None
    cls = check_class(obj, origin)
    if cls.name != name:
        raise UserError(f"{origin} loads class {cls.__qualname__} whose name is {cls.name!r}: an "
                        f"entry point's name must be its class's `name`")
    return cls


@functools.cache
def _load_module_class(name: str) -> type[Algorithm]:
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise _unknown(name, f" (and no module {missing!r} to import)") from None
        raise UserError(f"algorithm {name!r}: importing {module_name} failed: "
                        f"{_one_line(error)}") from None
    except Exception as error:  # noqa: BLE001 - any failure of third-party code is reported alike
        raise UserError(f"algorithm {name!r}: importing {module_name} failed: "
                        f"{_one_line(error)}") from None
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise UserError(f"algorithm {name!r}: module {module_name} has no {attribute!r}")
        obj = getattr(obj, part)
    return check_class(obj, f"algorithm {name!r}")


def resolve(name: str) -> type[Algorithm]:
    """The class of a name without its preset (see `split`)."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name in _entry_points():
        return _load_entry_point(name)
    if _MODULE_CLASS.fullmatch(name):
        return _load_module_class(name)
    raise _unknown(name)


def parse_name(text: str) -> tuple[type[Algorithm], str]:
    """'nvil', 'nvil:no-vn', 'pkg.mod:Cls:k1' -> (class, preset); every mistake is a UserError."""
    name, preset = split(text)
    cls = resolve(name)
    if preset not in cls.presets:
        presets = [p for p in cls.presets if p]
        if not presets:
            raise UserError(f"unknown preset {preset!r}: {name} has no presets (write {name})")
        raise unknown_name("preset", preset, presets, f"presets of {name}")
    source_info(cls)  # the source as imported, before the file can change during a long run
    return cls, preset


def source_info(cls: type) -> dict:
    """{module, class, file, source_sha256} of an estimator class: what a record keeps of its code.
    file and source_sha256 are None for a class whose module has no source file."""
    return dict(_source_info(cls))


@functools.cache
def _source_info(cls: type) -> dict:
    module = inspect.getmodule(cls)
    try:
        path = inspect.getsourcefile(module) if module is not None else None
    except TypeError:  # a built-in module
        path = None
    digest = None
    if path:
        try:
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            path = None
    return {"module": cls.__module__, "class": cls.__qualname__, "file": path,
            "source_sha256": digest}


def origin(name: str) -> str:
    """Where a short name comes from, in words (nothing is loaded)."""
    if name in BUILTIN:
        return "the suite's own"
    return "entry point of " + ", ".join(_package(e) for e in _entry_points()[name])


def entry_point_problem(name: str) -> str | None:
    """Why a short name cannot be used (a failing or shadowed entry point), or None."""
    if name in BUILTIN and name in _entry_points():
        packages = ", ".join(_package(e) for e in _entry_points()[name])
        return (f"entry point {name!r} of {packages} is shadowed by the suite's own estimator of "
                f"that name; rename the entry point")
    try:
        resolve(name)
    except UserError as error:
        return str(error)
    return None


class Registry(Mapping):
    """Short name -> class, read-only; an entry point is loaded when its name is looked up."""

    def __getitem__(self, name: str) -> type[Algorithm]:
        if name not in self:
            raise KeyError(name)
        return resolve(name)

    def __contains__(self, name) -> bool:
        return name in BUILTIN or name in _entry_points()

    def __iter__(self) -> Iterator[str]:
        return iter(short_names())

    def __len__(self) -> int:
        return len(short_names())

    def __repr__(self) -> str:
        return f"Registry({', '.join(short_names())})"


REGISTRY = Registry()

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "REGISTRY", "Registry", "check_class",
           "entry_point_problem", "origin", "parse_name", "resolve", "short_names", "source_info",
           "split"]
