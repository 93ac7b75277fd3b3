"""Fused closed-form SGD updates of NVIL and wake-sleep for sigmoid belief networks, for one run or
for many runs at once.

Why. At the paper's minibatch of 20 an autograd update of `sbn:200` spends most of its time in the
framework (graph building, per-tensor optimizer steps, small kernels), not in arithmetic. For SBNs
no backward pass is needed at all: samples are discrete, so every layer's gradient is local, and
for a linear-logistic layer with logits a = W c + b the score is the residual (v - sigmoid(a)):

    grad_W sum_i w_i log p(v_i | c_i) = sum_i w_i (v_i - sigmoid(a_i)) c_i^T = delta^T c   (one matmul)

with per-example weights w_i: 1 for the model (Eq. 5) and for the sleep phase (Eq. 13), the
normalised learning signal s_i for NVIL's inference network (Eq. 6, 12). The only two-layer
gradient is that of a baseline network C(c) = w2 tanh(W1 c + b1) + b2 (§4.1), written out below.
SGD is fused into the products: W += lr * delta^T c is one `baddbmm_`, and no gradient tensor is
ever stored.

Many runs. The parameters of R runs of the same architecture are stacked along a leading run
dimension, and each run's own modules (its `nn.Parameter`s and NVIL's running statistics) are
re-pointed to views into the stacks. Every matrix product of an update is then one batched product
over the runs, while each run's modules still hold that run's current values for evaluation,
checkpoints and records. Runs may differ in algorithm (NVIL and wake-sleep), in NVIL's options
(the eight variance-reduction combinations of Figure 1), learning rates and seed; they must share
the model architecture and the minibatch size. Runs are kept in the order given by `run_order_key`:
NVIL runs with an input-dependent baseline, other NVIL runs, then wake-sleep runs, so that each kind
is a contiguous slice of the stacks (slices are views: no copies).

Same numbers as the readable path. Each run draws its uniform noise from its own generator in the
same order and shapes as `InferenceNet.sample` and `BeliefNet.sample_like` do, and the statistics
and normaliser follow `algorithms/nvil.py` step by step, so a run trained here follows the same
trajectory as with autograd up to floating-point rounding, and a run batched with others follows
the one it would follow alone. tests/test_fused.py checks both in float64 for every NVIL preset and
wake-sleep, on one and on several layers.

Shapes (R runs, B examples, D pixels, H_l units of latent layer l, bottom-up as in models/):
    x (R, B, D); h[l] (R, B, H_l); weights are stored transposed, W^T: model (R, H_above, H_below),
    inference (R, C_l, H_l) with C_0 = D, baselines (R_idb, C_j, hidden) and (R_idb, hidden, 1);
    signals (R_nvil, S, B).
"""

from __future__ import annotations

import torch
from torch import Tensor

from algorithms.nvil import NVIL
from algorithms.wake_sleep import WakeSleep
from models.layers import LogisticLayer, bernoulli_log_prob
from models.networks import BeliefNet, InferenceNet


def unsupported_reason(algorithm, optimizer: str) -> str | None:
    """Why the fused path cannot train this run (None if it can)."""
    if type(algorithm) not in (NVIL, WakeSleep):
        return f"no fused update for algorithm {algorithm.name}"
    if optimizer != "sgd":
        return f"the fused update is plain SGD; optimizer {optimizer} needs autograd"
    model, inference = algorithm.model, algorithm.inference
    if not isinstance(model, BeliefNet) or not isinstance(inference, InferenceNet):
        return "the fused update needs a BeliefNet and an InferenceNet"
    if model.visible_kind != "bernoulli":
        return "the fused update covers binary visible layers only (not document models)"
    if model.prior.autoregressive:
        return "the fused update does not cover autoregressive priors (fDARN)"
    if inference.autoregressive:
        return "the fused update does not cover autoregressive inference networks"
    return None


def run_order_key(algorithm) -> int:
    """Runs are stacked in this order: NVIL with IDB (0), other NVIL (1), wake-sleep (2)."""
    if isinstance(algorithm, NVIL):
        return 0 if algorithm.baselines is not None else 1
    return 2


def _stack_into_views(tensors: list[Tensor], transpose: bool = False) -> Tensor:
    """Stack the runs' tensors and make each one a view into the stack (parameters keep their
    identity, so optimizers, state_dict() and load_state_dict() still work on them). With
    `transpose`, matrices are stored transposed, (R, C, H) for an (H, C) weight: batched products
    with the context on the left run markedly faster from this layout (measured with MKL on
    AVX-512 CPUs: up to 5x for the 100-unit baseline layer), and the modules see the same values."""
    if transpose:
        stack = torch.stack([t.detach().t() for t in tensors])
        for index, tensor in enumerate(tensors):
            tensor.data = stack[index].t()
        return stack
    stack = torch.stack([t.detach() for t in tensors])
    for index, tensor in enumerate(tensors):
        tensor.data = stack[index]
    return stack


def _layer_stacks(layers: list[LogisticLayer]) -> tuple[Tensor | None, Tensor]:
    """(W^T stacked (R, C, H) or None for a prior, b stacked (R, H))."""
    weight = (_stack_into_views([layer.weight for layer in layers], transpose=True)
              if layers[0].weight is not None else None)
    return weight, _stack_into_views([layer.bias for layer in layers])


def _logits(weight_t: Tensor, bias: Tensor, context: Tensor) -> Tensor:
    """a = context W^T + b for every run: (R, B, C) x (R, C, H) -> (R, B, H)."""
    return torch.baddbmm(bias.unsqueeze(1), context, weight_t)


def _bernoulli(logits: Tensor, value: Tensor, probability: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
    """log p(value) summed over units (R, B), and the score value - sigmoid(logits) (R, B, H)."""
    if probability is None:
        probability = torch.sigmoid(logits)
    return bernoulli_log_prob(logits, value), value - probability


def _draw(logits: Tensor, noise: Tensor, probability: Tensor | None = None) -> Tensor:
    """value = [u < sigmoid(a)], as LogisticLayer samples."""
    if probability is None:
        probability = torch.sigmoid(logits)
    return (noise < probability).to(logits.dtype)


def _sample(logits: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A sample with its log-probability and score, from one sigmoid of the logits."""
    probability = torch.sigmoid(logits)
    value = _draw(logits, noise, probability)
    return (value, *_bernoulli(logits, value, probability))


def _ascend(weight_t: Tensor | None, bias: Tensor, delta: Tensor, context: Tensor | None) -> None:
    """W += delta^T context (as W^T += context^T delta), b += sum_i delta_i, for every run; delta
    already carries the learning rate and the per-example weights."""
    if weight_t is not None:
        weight_t.baddbmm_(context.transpose(1, 2), delta)
    bias.add_(delta.sum(1))


class FusedSGD:
    """One SGD update of R runs at once. `algorithms` must be in `run_order_key` order and share the
    architecture; `learning_rates[r]` maps run r's parameter groups to their learning rates."""

    def __init__(self, algorithms: list, learning_rates: list[dict[str, float]]):
        keys = [run_order_key(a) for a in algorithms]
        if keys != sorted(keys):
            raise ValueError("runs must be ordered by run_order_key")
        first = algorithms[0]
        shapes = {(a.model.latent_sizes, a.model.num_features) for a in algorithms}
        if len(shapes) != 1:
            raise ValueError(f"runs batched together must share the architecture, got {shapes}")
        self.algorithms = algorithms
        self.num_runs = len(algorithms)
        self.num_nvil = sum(k < 2 for k in keys)
        self.num_idb = sum(k == 0 for k in keys)
        nvil_runs = algorithms[:self.num_nvil]
        if len({a.num_signals for a in nvil_runs}) > 1:
            raise ValueError("NVIL runs batched together must agree on local_signals")
        if len({a.options.baseline_hidden for a in nvil_runs[:self.num_idb]}) > 1:
            raise ValueError("NVIL runs batched together must agree on baseline_hidden")
        self.num_signals = nvil_runs[0].num_signals if nvil_runs else 0
        self.local_signals = bool(nvil_runs) and nvil_runs[0].options.local_signals
        self.latent_sizes = first.model.latent_sizes
        reference = first.model.prior.bias

        def per_run(values, shape=(-1, 1, 1)) -> Tensor:
            """A column of per-run constants, shaped to broadcast against (R, B, H)."""
            return torch.tensor(values, dtype=reference.dtype, device=reference.device).view(shape)

        # Model P: visible layer, conditionals (h[i] given h[i+1]), prior. Inference network Q.
        models = [a.model for a in algorithms]
        self.visible = _layer_stacks([m.visible for m in models])
        self.conditionals = [_layer_stacks([m.conditionals[i] for m in models])
                             for i in range(len(self.latent_sizes) - 1)]
        self.prior_bias = _layer_stacks([m.prior for m in models])[1]
        self.inference = [_layer_stacks([a.inference.layers[i] for a in algorithms])
                          for i in range(len(self.latent_sizes))]
        self.input_mean = torch.stack([a.inference.input_mean for a in algorithms]).unsqueeze(1)
        self.model_rate = per_run([rates["model"] for rates in learning_rates])
        self.inference_rate = per_run([rates["inference"] for rates in learning_rates])
        # NVIL: running statistics (views, so checkpoints see them), options as per-run columns.
        if self.num_nvil:
            self.signal_mean = _stack_into_views([a.signal_mean for a in nvil_runs])
            self.signal_var = _stack_into_views([a.signal_var for a in nvil_runs])
            options = [a.options for a in nvil_runs]
            column = (-1, 1)  # against (R_nvil, S)
            self.use_mean = per_run([o.constant_baseline for o in options], column)
            self.use_var = per_run([o.variance_normalisation for o in options], column).bool()
            # c <- c + (1 - α)(mean - c) is α c + (1 - α) mean; 0 for runs that keep no statistics.
            self.statistics_rate = per_run(
                [(1 - o.smoothing) * (o.constant_baseline or o.variance_normalisation)
                 for o in options], column)
        if self.num_idb:
            idb_runs = nvil_runs[:self.num_idb]
            self.baselines = []
            for j in range(self.num_signals):
                nets = [a.baselines[j].net for a in idb_runs]
                hidden_w = _stack_into_views([n[0].weight for n in nets], transpose=True)
                hidden_b = _stack_into_views([n[0].bias for n in nets])
                out_w = _stack_into_views([n[2].weight for n in nets], transpose=True)  # (R, hidden, 1)
                out_b = _stack_into_views([n[2].bias for n in nets])     # (R_idb, 1)
                self.baselines.append((hidden_w, hidden_b, out_w, out_b))
            self.baseline_rate = per_run([learning_rates[r]["baseline"]
                                          for r in range(self.num_idb)])

    # -- random numbers ----------------------------------------------------------------------
    def _noise(self, x: Tensor, generators, active: list[bool]) -> tuple[list[Tensor], list[Tensor]]:
        """Uniform noise for the wake samples of Q (every run) and the fantasies of wake-sleep
        runs, drawn from each run's generator in the order and shapes of the readable path:
        Q bottom-up (InferenceNet.sample), then the prior, the conditionals top-down and the
        visible layer (BeliefNet.sample_like). Inactive runs draw nothing."""
        runs, batch = x.shape[0], x.shape[1]
        options = {"dtype": x.dtype, "device": x.device}
        if runs == 1 and active[0] and self.num_nvil == 1:  # one NVIL run: no copies
            return [torch.rand((1, batch, size), generator=generators[0], **options)
                    for size in self.latent_sizes], []
        wake = [torch.full((runs, batch, size), 0.5, **options) for size in self.latent_sizes]
        sleep_sizes = list(reversed(self.latent_sizes)) + [x.shape[-1]]
        sleep = [torch.full((runs - self.num_nvil, batch, size), 0.5, **options)
                 for size in sleep_sizes]
        for r, generator in enumerate(generators):
            if not active[r]:
                continue
            for noise in wake:
                torch.rand(noise.shape[1:], generator=generator, out=noise[r])
            if r >= self.num_nvil:
                for noise in sleep:
                    torch.rand(noise.shape[1:], generator=generator, out=noise[r - self.num_nvil])
        return wake, sleep

    # -- the update --------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, x: Tensor, generators, active: list[bool] | None = None) -> Tensor:
        """One update of every active run on its minibatch x[r]; returns each run's training bound
        (mean over the minibatch of log P(x, h) - log Q(h | x), shape (R,)). A run whose bound is
        not finite, or that is not active, is left unchanged (its statistics too)."""
        active = [True] * self.num_runs if active is None else list(active)
        wake_noise, sleep_noise = self._noise(x, generators, active)
        centred = x - self.input_mean

        # Wake: h ~ Q(h | x) layer by layer, with log Q and its scores.
        h, log_q, q_score, contexts = [], [], [], []
        context = centred
        for (weight, bias), noise in zip(self.inference, wake_noise, strict=True):
            value, term, score = _sample(_logits(weight, bias, context), noise)
            h.append(value)
            log_q.append(term)
            q_score.append(score)
            contexts.append(context)
            context = value

        # log P(x, h) per layer: the data given h[0], h[i] given h[i+1], the prior of the top.
        log_p, p_score = zip(
            _bernoulli(_logits(*self.visible, h[0]), x),
            *(_bernoulli(_logits(weight, bias, h[i + 1]), h[i])
              for i, (weight, bias) in enumerate(self.conditionals)),
            _bernoulli(self.prior_bias.unsqueeze(1), h[-1]), strict=True)  # (R, 1, H) logits

        log_weight = torch.stack(log_p).sum(0) - torch.stack(log_q).sum(0)    # (R, B)
        bound = log_weight.mean(-1)
        # A run is updated if it is active and its bound is finite. Usually all are: then no
        # masking at all; otherwise where(), since 0 * NaN is NaN.
        ok = None
        if not (all(active) and bool(torch.isfinite(bound).all())):
            ok = torch.isfinite(bound) & torch.tensor(active, device=x.device)

        def scaled(delta: Tensor, rate: Tensor, runs: slice = slice(None)) -> Tensor:
            if ok is None:
                return delta * rate
            return torch.where(ok[runs].view(-1, 1, 1), delta * rate, 0.0)

        # Everything below reads the parameters before any of them changes; updates come last.
        nvil = slice(0, self.num_nvil)
        sleep = slice(self.num_nvil, self.num_runs)
        if self.num_nvil:
            signals = self._nvil_signals(log_weight, log_p, log_q, nvil)         # (R_nvil, S, B)
            if self.num_idb:
                baseline_values = self._baseline_forward(centred, h)
                baseline = torch.stack([value for _, _, value in baseline_values], 1)
                signals = torch.cat([signals[:self.num_idb] - baseline, signals[self.num_idb:]])
            normalised = self._normalise(signals, None if ok is None else ok[nvil])
            if self.num_idb:
                baseline_updates = self._baseline_deltas(baseline_values, normalised, ok)
        if self.num_nvil < self.num_runs:
            sleep_scores, sleep_contexts = self._sleep(x, sleep, sleep_noise)

        # Apply. The model ascends log P(x, h) on the wake samples (both algorithms).
        _ascend(*self.visible, scaled(p_score[0], self.model_rate), h[0])
        for i, (weight, bias) in enumerate(self.conditionals):
            _ascend(weight, bias, scaled(p_score[i + 1], self.model_rate), h[i + 1])
        self.prior_bias.add_(scaled(p_score[-1], self.model_rate).sum(1))
        # Q: NVIL runs follow their normalised signals, wake-sleep runs their fantasies.
        for layer, (weight, bias) in enumerate(self.inference):
            if self.num_nvil:
                signal = normalised[:, layer if self.local_signals else 0].unsqueeze(-1)
                delta = scaled(signal * q_score[layer][nvil], self.inference_rate[nvil], nvil)
                _ascend(weight[nvil], bias[nvil], delta, contexts[layer][nvil])
            if self.num_nvil < self.num_runs:
                delta = scaled(sleep_scores[layer], self.inference_rate[sleep], sleep)
                _ascend(weight[sleep], bias[sleep], delta, sleep_contexts[layer])
        # Baselines: ψ ascends sum_i s_i C(context_i).
        for (hidden_w, hidden_b, out_w, out_b), (hidden_delta, context, out_w_delta, out_b_delta) \
                in zip(self.baselines if self.num_idb else [], baseline_updates if self.num_idb
                       else [], strict=True):
            _ascend(hidden_w, hidden_b, hidden_delta, context)
            out_w.add_(out_w_delta.transpose(1, 2))
            out_b.add_(out_b_delta)
        return bound

    # -- NVIL --------------------------------------------------------------------------------
    def _nvil_signals(self, log_weight: Tensor, log_p, log_q, runs: slice) -> Tensor:
        """l^j = sum_{k >= j-1} log P terms - sum_{k >= j} log Q terms (Eq. 12), as in
        NVIL.learning_signals; the first (and, with a global signal, only) one is log_weight."""
        if self.num_signals == 1:
            return log_weight[runs].unsqueeze(1)
        log_p_tail = torch.stack([t[runs] for t in log_p], 1).flip(1).cumsum(1).flip(1)
        log_q_tail = torch.stack([t[runs] for t in log_q], 1).flip(1).cumsum(1).flip(1)
        return (log_p_tail[:, :-1] - log_q_tail)[:, :self.num_signals]

    def _baseline_forward(self, centred: Tensor, h: list[Tensor]):
        """C_j(context) of every IDB run: [(context, tanh hidden units, value (R_idb, B))]."""
        runs = slice(0, self.num_idb)
        contexts = [centred] + h[:-1]
        values = []
        for j, (hidden_w, hidden_b, out_w, out_b) in enumerate(self.baselines):
            context = contexts[j][runs]
            hidden = torch.tanh(_logits(hidden_w, hidden_b, context))
            values.append((context, hidden, _logits(out_w, out_b, hidden).squeeze(-1)))
        return values

    def _normalise(self, residual: Tensor, ok: Tensor | None) -> Tensor:
        """s = (r - c) / max(1, sqrt(v)) with c updated first and v after use, per run and signal,
        exactly as NVIL.step does (see its docstring for why v lags)."""
        scale = torch.where(self.use_var, self.signal_var.sqrt().clamp_min(1.0), 1.0)
        batch_var, batch_mean = torch.var_mean(residual, -1, correction=0)
        for statistic, batch in ((self.signal_mean, batch_mean), (self.signal_var, batch_var)):
            change = self.statistics_rate * (batch - statistic)
            statistic.add_(change if ok is None else torch.where(ok.view(-1, 1), change, 0.0))
        centred = residual - (self.use_mean * self.signal_mean).unsqueeze(-1)
        return centred / scale.unsqueeze(-1)

    def _baseline_deltas(self, baseline_values, normalised: Tensor, ok: Tensor | None):
        """ψ ascends sum_i s_i C(context_i) (the baseline loss of NVIL.step): for
        C = w2 tanh(W1 c + b1) + b2, the hidden units' delta is s_i w2 (1 - tanh^2), taken with
        the parameters before this update."""
        runs = slice(0, self.num_idb)
        updates = []
        for j, ((context, hidden, _), (_, _, out_w, _)) in enumerate(
                zip(baseline_values, self.baselines, strict=True)):
            weighted = normalised[:self.num_idb, j].unsqueeze(-1) * self.baseline_rate  # (R_idb, B, 1)
            if ok is not None:
                weighted = torch.where(ok[runs].view(-1, 1, 1), weighted, 0.0)
            hidden_delta = weighted * out_w.transpose(1, 2) * (1 - hidden * hidden)  # (R, B, hidden)
            updates.append((hidden_delta, context, (weighted * hidden).sum(1, keepdim=True),
                            weighted.sum(1)))
        return updates

    # -- wake-sleep --------------------------------------------------------------------------
    def _sleep(self, x: Tensor, runs: slice, noise: list[Tensor]):
        """Fantasies (x', h') ~ P of the wake-sleep runs and the scores of Q(h' | x') per layer."""
        depth = len(self.latent_sizes)
        prior = self.prior_bias[runs].unsqueeze(1)
        fantasy = [_draw(prior, noise[0])]
        for i in reversed(range(depth - 1)):
            weight, bias = self.conditionals[i]
            logits = _logits(weight[runs], bias[runs], fantasy[0])
            fantasy.insert(0, _draw(logits, noise[depth - 1 - i]))
        weight, bias = self.visible
        fantasy_x = _draw(_logits(weight[runs], bias[runs], fantasy[0]), noise[-1])
        scores, contexts = [], []
        context = fantasy_x - self.input_mean[runs]
        for layer, (weight, bias) in enumerate(self.inference):
            logits = _logits(weight[runs], bias[runs], context)
            scores.append(fantasy[layer] - torch.sigmoid(logits))
            contexts.append(context)
            context = fantasy[layer]
        return scores, contexts
