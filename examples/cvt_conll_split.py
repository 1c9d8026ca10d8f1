"""Split CoNLL-2003 training sentences into a labelled part and unlabeled text, for cross-view training.

Sentence i (counted from 0 in file order, -DOCSTART- lines dropped) is labelled when i % EVERY == 0, so the
labelled tenth is spread over every document; the others become unlabeled text, one sentence per line,
words separated by single spaces (what `ptm finetune --cvt-unlabeled` reads for token-classification).

    python3 examples/cvt_conll_split.py ../shared/data/conll2003/train.txt -o conll-split --every 10
"""

from __future__ import annotations

import argparse
from pathlib import Path


def sentences(path: Path) -> list[list[str]]:
    out, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if current:
                out.append(current)
            current = []
            continue
        current.append(line)
    if current:
        out.append(current)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--every", type=int, default=10, help="label one sentence in this many (10: 10%%)")
    args = parser.parse_args()
    found = sentences(args.train)
    labelled = [s for i, s in enumerate(found) if i % args.every == 0]
    unlabeled = [s for i, s in enumerate(found) if i % args.every != 0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labelled.txt").write_text("".join("\n".join(s) + "\n\n" for s in labelled), encoding="utf-8")
    (args.out / "unlabeled.txt").write_text("".join(" ".join(line.split()[0] for line in s) + "\n" for s in unlabeled),
                                            encoding="utf-8")
    print(f"{len(labelled):,} labelled sentences -> {args.out / 'labelled.txt'}, "
          f"{len(unlabeled):,} unlabeled -> {args.out / 'unlabeled.txt'}")


if __name__ == "__main__":
    main()
