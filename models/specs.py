"""Model specs: the strings users type ("sbn:200-200", "fdarn:500", "doc-sbn:50", "nsbn:200",
"gauss:64-64") and what they build.

The nonlinear family (models/mlp.py) takes its deterministic layers after the latent sizes:
FAMILY:SIZES[/HIDDEN][/ACTIVATION], e.g. "nsbn:200" (two hidden layers of 200 tanh units, the
defaults), "nsbn:200/300-300", "nsbn:200/200-200/lrelu0.3" (DisARM's code's activation),
"nsbn:3/4-4" (a tiny one for exact checks). The spec's name omits what equals the defaults.

The Gaussian family (models/gaussian.py) has continuous latents under Bernoulli visibles:
"gauss:64-64-64" is three layers of 64 Gaussian units (N(0, I) on top, each layer below
N(W z_above + b, diag sigma^2)), with a Gaussian inference network; conditionals are linear unless
deterministic layers follow, as for nsbn: "gauss:32/200-200" (MLPs of two tanh layers of 200, the
visible layer too), "gauss:32/200-200/lrelu0.2". A size ending in "b" is a layer of binary units
(mixed stacks): "gauss:200b-64" has 200 binary units on top of 64 Gaussian ones."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import torch

from bench.errors import UserError, unknown_name
from models import mlp
from models.gaussian import GaussianLayer
from models.layers import LogisticLayer
from models.networks import BeliefNet, InferenceNet

# family -> (visible layer, autoregressive prior, at most one latent layer, data kind it models)
FAMILIES = {
    "sbn": ("bernoulli", False, False, "binary"),
    "fdarn": ("bernoulli", True, True, "binary"),
    "doc-sbn": ("multinomial", False, True, "counts"),
    "doc-fdarn": ("multinomial", True, True, "counts"),
    "nsbn": ("bernoulli", False, False, "binary"),
    "gauss": ("bernoulli", False, False, "binary"),
}
# families whose conditionals are MLPs (models/mlp.py) -> default (hidden sizes, activation)
DETERMINISTIC_LAYERS = {"nsbn": (mlp.DEFAULT_HIDDEN, mlp.DEFAULT_ACTIVATION),
                        "gauss": ((), mlp.DEFAULT_ACTIVATION)}
#: families whose latent layers are Gaussian unless a size says "b" (binary)
GAUSSIAN_FAMILIES = ("gauss",)
INFERENCE_KINDS = ("factorial", "autoregressive")


@dataclass(frozen=True)
class ModelSpec:
    """A model family, its latent layer sizes deepest first (as in the paper's tables), and the
    inference network's structure within each layer. For the nonlinear family, `hidden` (the
    deterministic layers' sizes, bottom-up) and `activation` of every conditional's MLP; empty
    for the other families (and filled with the family's defaults when left empty). `binary`
    marks, deepest first, the layers of binary units in a Gaussian family (empty: none)."""

    family: str
    layers: tuple[int, ...]
    inference: str = "factorial"
    init_scale: float = 0.01
    hidden: tuple[int, ...] = ()
    activation: str = ""
    binary: tuple[bool, ...] = ()

    def __post_init__(self):
        if self.family in DETERMINISTIC_LAYERS:
            hidden, activation = DETERMINISTIC_LAYERS[self.family]
            object.__setattr__(self, "hidden", tuple(self.hidden) or hidden)
            object.__setattr__(self, "activation", self.activation or activation)
        if self.family in GAUSSIAN_FAMILIES and not any(self.binary):
            object.__setattr__(self, "binary", ())

    @classmethod
    def parse(cls, text: str, **overrides) -> ModelSpec:
        family, sep, rest = text.strip().partition(":")
        if family not in FAMILIES:
            raise unknown_name("model family", family, FAMILIES)
        sizes, *extras = rest.split("/")
        binary = ()
        if family in GAUSSIAN_FAMILIES:
            tokens = sizes.split("-")
            binary = tuple(token.endswith("b") for token in tokens)
            sizes = "-".join(token.removesuffix("b") for token in tokens)
        layers = _sizes(sizes) if sep else ()
        hidden, activation = (), ""
        if family in DETERMINISTIC_LAYERS and len(extras) <= 2:
            for extra in extras:  # a size list is the hidden layers, a name the activation
                if extra[:1].isdigit() and not hidden:
                    hidden = _sizes(extra) or (0,)
                elif extra and not extra[:1].isdigit() and not activation:
                    activation = extra
                else:
                    layers = ()
        elif extras:
            layers = ()
        if not layers or min(layers) < 1 or (hidden and min(hidden) < 1):
            raise UserError(f"malformed model spec {text!r}: write FAMILY:SIZES with sizes deepest "
                            f"first, e.g. sbn:200, sbn:200-200-500, fdarn:500, doc-sbn:50, or "
                            f"nsbn:200[/HIDDEN][/ACTIVATION] as in nsbn:200/200-200/tanh, or "
                            f"gauss:64-64[/HIDDEN][/ACTIVATION] (a size ending in b: binary units)")
        spec = cls(family, layers, **overrides, hidden=hidden, activation=activation,
                   binary=binary if any(binary) else ())
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise unknown_name("model family", self.family, FAMILIES)
        if FAMILIES[self.family][2] and len(self.layers) != 1:
            raise UserError(f"{self.family} has one latent layer; got {self.name!r}")
        if self.inference not in INFERENCE_KINDS:
            raise unknown_name("inference network", self.inference, INFERENCE_KINDS)
        if self.family in DETERMINISTIC_LAYERS:
            try:
                mlp.parse_activation(self.activation)
            except ValueError as error:
                raise UserError(f"model {self.name!r}: {error}") from None
            if self.hidden and min(self.hidden) < 1:
                raise UserError(f"model {self.name!r}: hidden layer sizes must be positive")
            if self.family not in GAUSSIAN_FAMILIES and not self.hidden:
                raise UserError(f"model {self.name!r}: {self.family} needs hidden layers")
        elif self.hidden or self.activation:
            raise UserError(f"{self.family} has no deterministic layers; a nonlinear model is "
                            f"nsbn:SIZES[/HIDDEN][/ACTIVATION], e.g. nsbn:200")
        if self.binary and (self.family not in GAUSSIAN_FAMILIES
                            or len(self.binary) != len(self.layers)):
            raise UserError(f"model {self.name!r}: binary layers (sizes ending in b) belong to "
                            f"the Gaussian family, one mark per layer, e.g. gauss:200b-64")
        if self.family in GAUSSIAN_FAMILIES and self.inference != "factorial" and \
                not all(self.binary or [False]):
            raise UserError(f"model {self.name!r}: Gaussian layers have a factorial inference "
                            f"network (an autoregressive one needs binary latents)")

    @property
    def name(self) -> str:
        marks = self.binary or (False,) * len(self.layers)
        name = f"{self.family}:" + "-".join(f"{size}{'b' if flag else ''}"
                                            for size, flag in zip(self.layers, marks, strict=True))
        if self.family in DETERMINISTIC_LAYERS:
            hidden, activation = DETERMINISTIC_LAYERS[self.family]
            if self.hidden != hidden:
                name += "/" + "-".join(map(str, self.hidden))
            if self.activation != activation:
                name += "/" + self.activation
        return name

    @property
    def data_kind(self) -> str:
        return FAMILIES[self.family][3]

    @property
    def latent_kinds(self) -> tuple[str, ...]:
        """Each latent layer's units, deepest first as `layers`: "binary" or "gaussian"."""
        if self.family not in GAUSSIAN_FAMILIES:
            return ("binary",) * len(self.layers)
        marks = self.binary or (False,) * len(self.layers)
        return tuple("binary" if flag else "gaussian" for flag in marks)

    @property
    def num_latents(self) -> int:
        return sum(self.layers)

    def replace(self, **changes) -> ModelSpec:
        spec = dataclasses.replace(self, **changes)
        spec.validate()
        return spec

    def build(self, num_features: int, feature_mean=None, generators=(None,),
              dtype=torch.float32) -> tuple[BeliefNet, InferenceNet]:
        """The model and its inference network for one run per generator (R = len(generators)),
        each run's initial weights drawn from its own generator: model first (prior, conditionals
        top-down, visible), then the inference network. `feature_mean` (the training-set mean
        vector) centres the inference network's input, in float64, and starts the visible biases at
        the data's marginals."""
        visible, prior_autoregressive, _, _ = FAMILIES[self.family]
        bottom_up = tuple(reversed(self.layers))
        common = {"init_scale": self.init_scale, "generators": generators, "dtype": dtype}
        if self.family in GAUSSIAN_FAMILIES:
            kinds = tuple(reversed(self.latent_kinds))                    # bottom-up
            model_layers = {"conditional_layer": [self.layer_builder(k, "unit") for k in kinds[:-1]],
                            "prior_layer": (LogisticLayer if kinds[-1] == "binary" else
                                            functools.partial(GaussianLayer, scale="fixed")),
                            "visible_layer": self.layer_builder("binary", "unit")}
            inference_layers = [self.layer_builder(k, "context") for k in kinds]
        else:
            model_layers = {"conditional_layer": self.conditional_layer()}
            inference_layers = self.conditional_layer()
        model = BeliefNet(bottom_up, num_features, visible, prior_autoregressive, **common,
                          **model_layers)
        mean = (None if feature_mean is None
                else torch.as_tensor(np.asarray(feature_mean), dtype=torch.float64))
        inference = InferenceNet(num_features, bottom_up, self.inference == "autoregressive", mean,
                                 **common, conditional_layer=inference_layers)
        if mean is not None:
            model.init_visible_bias(mean)
        return model, inference

    def layer_builder(self, kind: str, scale: str):
        """What builds one conditional of the Gaussian family: binary units (LogisticLayer, or an
        MLP one with this spec's hidden layers), or Gaussian units with the given `scale`
        ("unit" in the model, "context" in the inference network)."""
        if kind == "gaussian":
            return functools.partial(GaussianLayer, hidden=self.hidden,
                                     activation=self.activation, scale=scale)
        if self.hidden:
            return functools.partial(mlp.MLPLogisticLayer, hidden=self.hidden,
                                     activation=self.activation)
        return LogisticLayer

    def conditional_layer(self):
        """What builds the conditionals (and Q's layers): LogisticLayer, or for the nonlinear
        family an MLPLogisticLayer with this spec's hidden sizes and activation."""
        if self.family in DETERMINISTIC_LAYERS:
            return functools.partial(mlp.MLPLogisticLayer, hidden=self.hidden,
                                     activation=self.activation)
        return LogisticLayer


def _sizes(text: str) -> tuple[int, ...]:
    """"200-200" -> (200, 200); () if malformed."""
    try:
        return tuple(int(size) for size in text.split("-"))
    except ValueError:
        return ()
