"""How much of NVIL's learning signal on 20 Newsgroups is document length: the spread of the
unigram log-likelihood (bench/references.py) within minibatches of 20 training documents, and
its correlation with the length. Prints the figures quoted in results/README.md.

    BENCH_DATA_MIRROR=../shared/data python -m results.document_signal_spread
"""

import numpy as np

import datasets
from bench.references import unigram_scores


def main() -> None:
    data = datasets.load("20news")
    log_likelihood, lengths = unigram_scores(data, "train")
    rng = np.random.default_rng(0)
    spreads = [log_likelihood[rng.choice(len(log_likelihood), 20, replace=False)].std()
               for _ in range(2000)]
    print(f"{len(lengths)} training documents; length mean {lengths.mean():.0f}, median "
          f"{np.median(lengths):.0f}, max {lengths.max():.0f}")
    print(f"unigram log-likelihood per document: standard deviation within a minibatch of 20, "
          f"mean {np.mean(spreads):.0f}, median {np.median(spreads):.0f} (2,000 minibatches)")
    print(f"correlation with the length: {np.corrcoef(log_likelihood, lengths)[0, 1]:.3f}")


if __name__ == "__main__":
    main()
