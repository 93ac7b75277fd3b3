"""Model specs: the strings users type ("sbn:200-200", "fdarn:500", "doc-sbn:50") and what they build."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from bench.errors import UserError, unknown_name
from models.networks import BeliefNet, InferenceNet

# family -> (visible layer, autoregressive prior, at most one latent layer, data kind it models)
FAMILIES = {
    "sbn": ("bernoulli", False, False, "binary"),
    "fdarn": ("bernoulli", True, True, "binary"),
    "doc-sbn": ("multinomial", False, True, "counts"),
    "doc-fdarn": ("multinomial", True, True, "counts"),
}
INFERENCE_KINDS = ("factorial", "autoregressive")


@dataclass(frozen=True)
class ModelSpec:
    """A model family, its latent layer sizes deepest first (as in the paper's tables), and the
    inference network's structure within each layer."""

    family: str
    layers: tuple[int, ...]
    inference: str = "factorial"
    init_scale: float = 0.01

    @classmethod
    def parse(cls, text: str, **overrides) -> ModelSpec:
        family, sep, sizes = text.strip().partition(":")
        if family not in FAMILIES:
            raise unknown_name("model family", family, FAMILIES)
        try:
            layers = tuple(int(size) for size in sizes.split("-")) if sep else ()
        except ValueError:
            layers = ()
        if not layers or min(layers) < 1:
            raise UserError(f"malformed model spec {text!r}: write FAMILY:SIZES with sizes deepest "
                            f"first, e.g. sbn:200, sbn:200-200-500, fdarn:500, doc-sbn:50")
        spec = cls(family, layers, **overrides)
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise unknown_name("model family", self.family, FAMILIES)
        if FAMILIES[self.family][2] and len(self.layers) != 1:
            raise UserError(f"{self.family} has one latent layer; got {self.name!r}")
        if self.inference not in INFERENCE_KINDS:
            raise unknown_name("inference network", self.inference, INFERENCE_KINDS)

    @property
    def name(self) -> str:
        return f"{self.family}:{'-'.join(map(str, self.layers))}"

    @property
    def data_kind(self) -> str:
        return FAMILIES[self.family][3]

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
        model = BeliefNet(bottom_up, num_features, visible, prior_autoregressive, **common)
        mean = (None if feature_mean is None
                else torch.as_tensor(np.asarray(feature_mean), dtype=torch.float64))
        inference = InferenceNet(num_features, bottom_up, self.inference == "autoregressive", mean,
                                 **common)
        if mean is not None:
            model.init_visible_bias(mean)
        return model, inference
