"""The estimator registry (algorithms/registry.py): short names, entry points and module:Class names
resolve to classes, every mistake is one line, and what used to be tables keyed by estimator names
in bench/ (paper learning rates, bias-check steps) is declared by each estimator with the same
values. tests/test_external_estimator.py does the same through an installed package."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from algorithms import REGISTRY, build, parse_name, registry, source_info
from algorithms.nvil import NVIL
from algorithms.wake_sleep import WakeSleep
from bench.check import default_steps_for, run_bias_check, tiny_problem
from bench.cli import main
from bench.errors import UserError
from bench.specs import RunSpec


class TinyEstimator(WakeSleep):
    """A third-party estimator, as far as the registry knows."""

    name = "tiny"
    presets = {"": {}, "slow": {"inference_lr_scale": 0.1}}
    paper_learning_rates = {"mnist": 5e-4}
    check_steps = 123


class NotAnEstimator:
    name = "not"


class FakeDist:
    name, version = "fake-estimators", "1.0"


class FakeEntryPoint:
    def __init__(self, name, value):
        self.name, self.value, self.dist = name, value, FakeDist()

    def load(self):
        module, _, attribute = self.value.partition(":")
        return getattr(__import__(module, fromlist=["_"]), attribute)


@pytest.fixture
def entry_points(monkeypatch):
    """Installed entry points of group nvil_bench.algorithms, as the registry sees them."""
    here = __name__
    found = {"tiny": (FakeEntryPoint("tiny", f"{here}:TinyEstimator"),),
             "broken": (FakeEntryPoint("broken", "no_such_module_for_tests:Estimator"),),
             "not-one": (FakeEntryPoint("not-one", f"{here}:NotAnEstimator"),),
             "misnamed": (FakeEntryPoint("misnamed", f"{here}:TinyEstimator"),),
             "nvil": (FakeEntryPoint("nvil", f"{here}:TinyEstimator"),)}
    monkeypatch.setattr(registry, "_entry_points", lambda: found)
    registry._load_entry_point.cache_clear()
    yield found
    registry._load_entry_point.cache_clear()


def one_line_error(text: str) -> str:
    with pytest.raises(UserError) as info:
        parse_name(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_registry_short_names_and_presets():
    assert parse_name("nvil") == (NVIL, "")
    assert parse_name("nvil:none") == (NVIL, "none")
    assert parse_name("wake-sleep") == (WakeSleep, "")
    assert list(REGISTRY) == ["nvil", "wake-sleep", "reinforce", "rws", "rloo", "vimco", "arm",
                              "disarm", "rebar", "relax", "bihm", "vae", "short-run"] and REGISTRY["nvil"] is NVIL
    assert registry.split("nvil:baseline+idb") == ("nvil", "baseline+idb")


def test_registry_module_class_names():
    assert parse_name("algorithms.nvil:NVIL") == (NVIL, "")
    assert parse_name("algorithms.nvil:NVIL:idb+vn") == (NVIL, "idb+vn")
    assert parse_name(f"{__name__}:TinyEstimator:slow") == (TinyEstimator, "slow")
    assert registry.split("mypkg.est:MyEstimator:k1") == ("mypkg.est:MyEstimator", "k1")
    model, q_net, _ = tiny_problem()
    method = build(f"{__name__}:TinyEstimator:slow", model, q_net)
    assert type(method) is TinyEstimator and method.options[0].inference_lr_scale == 0.1


def test_registry_unknown_names_are_one_line_and_list_the_valid_ones():
    for text in ("nosuch", "nosuch:preset", "no_such_module_for_tests:Estimator"):
        message = one_line_error(text)
        assert message.startswith("unknown algorithm")
        assert "nvil" in message and "wake-sleep" in message
        assert "package.module:Class[:PRESET]" in message
    assert "has no 'Nope'" in one_line_error("algorithms.nvil:Nope")
    assert "valid presets of nvil" in one_line_error("nvil:nosuch")
    assert "has no presets" in one_line_error("wake-sleep:nosuch")
    assert "none" in one_line_error("algorithms.nvil:NVIL:nosuch")


@pytest.mark.parametrize("text", ["algorithms.base:StepResult", "json:dumps",
                                  f"{__name__}:NotAnEstimator"])
def test_registry_rejects_what_is_not_an_estimator(text):
    assert "not a subclass of algorithms.base.Algorithm" in one_line_error(text)


def test_registry_entry_points(entry_points, capsys):
    assert parse_name("tiny:slow") == (TinyEstimator, "slow")
    assert "tiny" in REGISTRY and REGISTRY["tiny"] is TinyEstimator
    assert REGISTRY["nvil"] is NVIL  # the suite's own name wins
    broken = one_line_error("broken")
    assert "entry point 'broken'" in broken and "fake-estimators 1.0" in broken
    assert "failed to load" in broken and "no_such_module_for_tests" in broken
    assert "not a subclass" in one_line_error("not-one")
    assert "must be its class's `name`" in one_line_error("misnamed")
    assert "tiny" in one_line_error("nosuch")  # valid names include the entry points

    assert main(["list"]) == 1  # a broken entry point is listed with its error
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")
             and line.split()}
    assert "fake-estimators" in lines["tiny"]
    assert "error: entry point 'broken'" in lines["broken"]
    assert "shadowed" in out


# What bench/specs.py's PAPER_LEARNING_RATES table gave, (dataset, algorithm) -> rate.
OLD_PAPER_LEARNING_RATES = {
    ("mnist", "nvil"): 3e-4, ("mnist", "wake-sleep"): 1e-4,
    ("synthetic", "nvil"): 3e-4, ("synthetic", "wake-sleep"): 1e-4,
    ("20news", "nvil"): 3e-5, ("20news", "wake-sleep"): 3e-5,
    ("rcv1", "nvil"): 1e-3, ("rcv1", "wake-sleep"): 1e-3,
}


@pytest.mark.parametrize("dataset, algorithm", sorted(OLD_PAPER_LEARNING_RATES))
def test_registry_paper_learning_rates_are_unchanged(dataset, algorithm):
    expected = OLD_PAPER_LEARNING_RATES[dataset, algorithm]
    for text in (algorithm, f"{algorithm}:none" if algorithm == "nvil" else algorithm):
        assert RunSpec(algorithm=text, dataset=dataset).resolved_learning_rate == expected
    assert RunSpec(algorithm=algorithm, dataset=dataset,
                   learning_rate=0.5).resolved_learning_rate == 0.5


def test_registry_paper_learning_rates_merge_with_the_base():
    name = f"{__name__}:TinyEstimator"
    assert RunSpec(algorithm=name, dataset="mnist").resolved_learning_rate == 5e-4
    assert RunSpec(algorithm=name, dataset="synthetic").resolved_learning_rate == 1e-4  # WakeSleep
    assert RunSpec(algorithm=name, dataset="20news").resolved_learning_rate == 3e-5  # the base
    assert NVIL.paper_learning_rate("another") == NVIL.default_learning_rate == 3e-4


def test_registry_check_steps_are_declared():
    assert default_steps_for("nvil") == default_steps_for("nvil:none") == 4000
    assert default_steps_for("wake-sleep") == 2000
    assert default_steps_for(f"{__name__}:TinyEstimator") == 123


def test_registry_bias_check_honours_the_preset_of_a_given_class():
    seen = []

    class RecordingNVIL(NVIL):
        def __init__(self, model, inference, options, generators=None):
            super().__init__(model, inference, options, generators)
            seen.append(options)

    report = run_bias_check("nvil:none", steps=2, warmup=0, algorithm_class=RecordingNVIL)
    assert report.algorithm == "nvil:none"
    assert seen and set(seen) == {NVIL.resolve_options("none")}  # every estimator the check built
    seen.clear()
    run_bias_check("nvil:global-signal", steps=2, warmup=0, overrides={"smoothing": "0.5"},
                   algorithm_class=RecordingNVIL)
    assert seen and set(seen) == {NVIL.resolve_options("global-signal", {"smoothing": "0.5"})}


def test_registry_source_info_names_the_estimators_code():
    for cls in (NVIL, WakeSleep, TinyEstimator):
        info = source_info(cls)
        path = Path(info["file"])
        assert info["module"] == cls.__module__ and info["class"] == cls.__qualname__
        assert path.resolve() == Path(__import__(cls.__module__, fromlist=["_"]).__file__).resolve()
        assert info["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert Path(source_info(NVIL)["file"]).name == "nvil.py"


def test_registry_records_carry_the_estimators_code(tmp_path):
    from bench.runs import train_run

    spec = RunSpec(algorithm="nvil:none", model="sbn:4", dataset="synthetic", updates=4,
                   eval_interval=2, eval_examples=20, test_examples=20)
    record = train_run(spec, tmp_path / "run", progress=False, log=lambda *a: None)
    assert record["status"] == "complete"
    algorithm = record["config"]["algorithm"]
    assert algorithm["name"] == "nvil" and algorithm["preset"] == "none"
    assert {key: algorithm[key] for key in ("module", "class", "file", "source_sha256")} \
        == source_info(NVIL)
