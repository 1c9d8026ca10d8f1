"""``ptm compress``: smaller checkpoints for deployment (int8 weights, pruned attention heads); docs/compress.md."""
