"""Huffman coding of the vocabulary for hierarchical softmax.

Every word is a leaf; its probability is the product of binary decisions at
the inner nodes on the path from the root. Frequent words get short paths.
Inner nodes are numbered 0..V-2 (the rows of the output matrix), the root
last; paths are stored root first, padded to the longest code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HuffmanTree:
    points: np.ndarray  # int64 [V, depth]: inner nodes on each word's path, root first, padded with 0
    codes: np.ndarray  # int8 [V, depth]: the branch taken at each node (0 or 1), padded with 0
    lengths: np.ndarray  # int64 [V]: path length of each word

    @property
    def depth(self) -> int:
        return int(self.points.shape[1])


def build_huffman(counts: np.ndarray) -> HuffmanTree:
    """The Huffman tree of ``counts`` (a vocabulary of at least two words)."""
    counts = np.asarray(counts, dtype=np.int64)
    vocab = counts.size
    if vocab < 2:
        return HuffmanTree(np.zeros((vocab, 1), np.int64), np.zeros((vocab, 1), np.int8), np.zeros(vocab, np.int64))
    # Nodes 0..V-1 are the leaves, V.. the inner nodes in order of creation, whose
    # weights never decrease: two sorted queues give the merge order in O(V).
    leaves = np.argsort(counts, kind="stable").tolist()
    weight = counts.tolist() + [0] * (vocab - 1)
    parent = np.zeros(2 * vocab - 1, dtype=np.int64)
    branch = np.zeros(2 * vocab - 1, dtype=np.int8)
    next_leaf, next_inner, created = 0, vocab, vocab

    def smallest() -> int:
        nonlocal next_leaf, next_inner
        if next_leaf < vocab and (next_inner >= created or weight[leaves[next_leaf]] <= weight[next_inner]):
            next_leaf += 1
            return leaves[next_leaf - 1]
        next_inner += 1
        return next_inner - 1

    for _ in range(vocab - 1):
        first, second = smallest(), smallest()
        weight[created] = weight[first] + weight[second]
        parent[first], parent[second] = created, created
        branch[second] = 1
        created += 1
    root = created - 1
    # Walk all leaves up together, one level per step.
    node = np.arange(vocab)
    steps_points, steps_codes = [], []
    active = node != root
    while active.any():
        steps_codes.append(np.where(active, branch[node], 0))
        node = np.where(active, parent[node], node)
        steps_points.append(np.where(active, node - vocab, -1))
        active = node != root
    lengths = np.sum([p >= 0 for p in steps_points], axis=0).astype(np.int64)
    up_points = np.stack(steps_points, axis=1)  # leaf's parent first
    up_codes = np.stack(steps_codes, axis=1)
    depth = up_points.shape[1]
    points = np.zeros((vocab, depth), dtype=np.int64)
    codes = np.zeros((vocab, depth), dtype=np.int8)
    # Reverse each word's valid prefix so that paths start at the root.
    slot = np.arange(depth)
    source = lengths[:, None] - 1 - slot
    valid = source >= 0
    rows = np.broadcast_to(np.arange(vocab)[:, None], (vocab, depth))
    points[valid] = up_points[rows[valid], source[valid]]
    codes[valid] = up_codes[rows[valid], source[valid]]
    return HuffmanTree(points=points, codes=codes, lengths=lengths)
