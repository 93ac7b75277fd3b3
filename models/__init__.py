"""Shared model definitions. Models know nothing of algorithms."""

from models.exact import MAX_EXACT_LATENTS, exact_elbo, exact_log_likelihood, exact_sleep_objective
from models.layers import LogisticLayer, SoftmaxLayer, bernoulli_log_prob
from models.mlp import MLPLogisticLayer
from models.networks import BeliefNet, InferenceNet
from models.specs import FAMILIES, INFERENCE_KINDS, ModelSpec

__all__ = ["BeliefNet", "InferenceNet", "LogisticLayer", "MLPLogisticLayer", "SoftmaxLayer", "ModelSpec",
           "FAMILIES", "INFERENCE_KINDS", "bernoulli_log_prob", "MAX_EXACT_LATENTS",
           "exact_elbo", "exact_log_likelihood", "exact_sleep_objective"]
