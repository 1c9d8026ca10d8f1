"""Unigram baseline for MLM figures: what a model that ignores context would score.

Token frequencies are counted on the training shards (add-one smoothed) and
scored on the evaluation shards. Masked positions are drawn uniformly from
non-special tokens, so the expected MLM loss of this baseline is its
cross-entropy over all eval tokens, and its expected accuracy is the eval
share of the single most frequent training token.

    python3 benchmarks/unigram_baseline.py --train SHARDS --eval SHARDS [--json]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from ptmcli.data.shards import ShardDataset


def token_counts(ds: ShardDataset) -> np.ndarray:
    counts = np.zeros(ds.vocab_size, dtype=np.int64)
    for i in range(len(ds)):
        counts += np.bincount(ds[i].input_ids, minlength=ds.vocab_size)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    train, evaluation = ShardDataset.open(args.train), ShardDataset.open(args.eval)
    if train.tokenizer_sha256 != evaluation.tokenizer_sha256:
        raise SystemExit("train and eval shards were encoded with different tokenizers")
    train_counts, eval_counts = token_counts(train), token_counts(evaluation)
    probs = (train_counts + 1) / (train_counts.sum() + len(train_counts))
    cross_entropy = float(-(eval_counts * np.log(probs)).sum() / eval_counts.sum())
    top = int(train_counts.argmax())
    accuracy = float(eval_counts[top] / eval_counts.sum())
    result = {"unigram_loss": cross_entropy, "unigram_ppl": math.exp(cross_entropy), "unigram_acc": accuracy, "eval_tokens": int(eval_counts.sum())}
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
