"""The SST-2 training subset the example tables share: the header, then N rows of train.tsv shuffled with seed 0.

    python3 examples/sst2_subset.py SST2_TRAIN_TSV OUT_TSV [N]      (N: 8000)
"""

import random
import sys

source, out = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 8000
lines = open(source, encoding="utf-8").read().splitlines()
rows = lines[1:]
random.Random(0).shuffle(rows)
open(out, "w", encoding="utf-8").write("\n".join([lines[0]] + rows[:count]) + "\n")
