"""How much a pretrained encoder's layers still tell tokens and texts apart (a collapse check).

    python3 benchmarks/encoder_spread.py --shards runs/budget/shards-enwiki-8k CKPT [CKPT ...]

For two 64-token passages of the shards (documents 5 and 9), per layer: the mean vector norm, the spread
across positions (standard deviation over positions relative to the mean absolute value; near 0: every
token has the same vector) and the cosine between the two passages' mean vectors (near 1: the layer does
not tell the texts apart). A collapsed encoder finetunes worse than a random one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import torch
import torch.nn.functional as F

from ptmcli.features.model import load_feature_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--shards", required=True, help="an LM shard directory encoded with the checkpoints' tokenizer")
    args = parser.parse_args()
    part = sorted(Path(args.shards).glob("part-*.arrow"))[0]
    rows = pa.ipc.open_stream(str(part)).read_all().column("input_ids")
    ids = torch.tensor([rows[5].as_py()[:64], rows[9].as_py()[:64]])
    print("checkpoint\tlayer\tnorm\tspread\tcosine")
    for checkpoint in args.checkpoints:
        model = load_feature_model(checkpoint)
        with torch.no_grad():
            layers = model.stack(ids, None, torch.ones_like(ids))
        for index, hidden in enumerate(layers):
            hidden = hidden.float()
            spread = hidden.std(dim=1).mean() / hidden.abs().mean()
            cosine = F.cosine_similarity(hidden[0].mean(0), hidden[1].mean(0), dim=0)
            print(f"{checkpoint}\t{index}\t{hidden.norm(dim=-1).mean():.2f}\t{spread:.3f}\t{cosine:.3f}")


if __name__ == "__main__":
    main()
