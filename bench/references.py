"""Reference models fitted in closed form: the sanity rows of a suite's table (`[[references]]`
in a suite file). Each is fitted on the training split and scored on the validation and test
splits, and writes a record like a trained run's, so tables read it the same way.

    unigram   documents: every word of a document drawn independently from the training set's
              word frequencies, add-one smoothed, with no latent variables,

                  log p(x) = sum_w x_w log f_w,     f_w = (n_w + 1) / (sum_v n_v + V),

              n_w the count of word w over the training documents and V the vocabulary's size.
              As for the document models (§4.3) the multinomial coefficient is left out, and the
              perplexity is exp(-(1/N) sum_n log p(x_n) / L_n) over the N documents of lengths
              L_n. A document model that made no use of its latents would do about as well, so
              Table 3's models must beat it to show that their latents explain anything.

The record's metrics have bound "exact" (the reference's log-likelihood itself, not a bound) and
k None. Shapes: a split's counts (N, V) (scipy sparse); log-likelihoods and lengths (N,).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from bench.errors import UserError


def unigram_scores(data, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(log p(x_n), L_n) of a split's documents under the training set's add-one smoothed word
    frequencies."""
    if data.kind != "counts":
        raise UserError(f"the unigram reference needs a document dataset; {data.name} is "
                        f"{data.kind}")
    counts = np.asarray(data.train.sum(0), dtype=np.float64).ravel()
    log_frequencies = np.log((counts + 1.0) / (counts.sum() + counts.size))
    rows = getattr(data, split)
    return (np.asarray(rows @ log_frequencies, dtype=np.float64).ravel(),
            np.asarray(rows.sum(1), dtype=np.float64).ravel())


def unigram(data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (log p(x_n), L_n) for the validation and test documents."""
    return {split: unigram_scores(data, split) for split in ("valid", "test")}


REFERENCES: dict[str, tuple[Callable, str]] = {
    "unigram": (unigram, "training-set word frequencies, add-one smoothed; no latent variables"),
}


def names() -> list[str]:
    return sorted(REFERENCES)


def metric(split: str, log_likelihoods: np.ndarray, lengths: np.ndarray) -> dict:
    mean = float(log_likelihoods.mean())
    entry = {"split": split, "bound": "exact", "k": None, "mean": mean, "nll": -mean,
             "num_examples": int(log_likelihoods.shape[0]), "update": None}
    words = lengths > 0
    entry["perplexity"] = float(np.exp(-np.mean(log_likelihoods[words] / lengths[words])))
    return entry


def _record(run_name: str, status: str, **fields) -> dict:
    from bench.records import SCHEMA_VERSION, code_version, environment

    return {"schema_version": SCHEMA_VERSION, "status": status, "run_name": run_name,
            "updates": 0, **fields, "code": code_version(), "environment": environment("cpu")}


def reference_record(name: str, data) -> dict:
    """The record of reference `name` fitted to and scored on `data`."""
    started = time.perf_counter()
    fit, description = REFERENCES[name]
    scored = fit(data)
    return _record(
        f"{data.name}-reference-{name}", "complete",
        config={"reference": {"name": name, "description": description},
                   "dataset": {"name": data.name, "split": data.split, "kind": data.kind,
                               "sizes": {s: int(getattr(data, s).shape[0])
                                         for s in ("train", "valid", "test")},
                               "provenance": data.provenance}},
        seed=None, wall_time_s=time.perf_counter() - started,
        metrics=[metric(split, *scored[split]) for split in ("valid", "test")])


def write_reference(reference, out_dir, data_dir=None) -> dict:
    """Fit and score a suite's reference (bench.suites.Reference) and write its record in
    `out_dir`; a reference that cannot be computed (no data) gets a failed record, as a cell."""
    import datasets
    from bench.records import write_record

    try:
        record = reference_record(reference.name, datasets.load(reference.dataset,
                                                                data_dir=data_dir))
    except Exception as error:  # noqa: BLE001 - shown as a failed row, like a failed cell
        record = _record(reference.run_name, "failed", error=f"{type(error).__name__}: {error}",
                         config={"reference": {"name": reference.name}}, metrics=[])
    write_record(out_dir, record)
    return record
