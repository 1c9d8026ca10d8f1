"""Split a SQuAD v1.1 file by article into a training and a test part (deterministic: by article order).

    python3 examples/squad_split.py ../shared/data/squad-v1.1/dev-v1.1.json -o squad-split --test-articles 10

writes ``train.json`` (all articles but the last N) and ``test.json`` (the last N), both in the SQuAD
JSON layout. Splitting by article keeps every passage's questions on one side, so the test part asks
about passages training never saw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def split(articles: list, test_articles: int) -> tuple[list, list]:
    if not 0 < test_articles < len(articles):
        raise SystemExit(f"--test-articles {test_articles}: the file has {len(articles)} articles; keep some for each part")
    return articles[:-test_articles], articles[-test_articles:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("squad", type=Path, help="a SQuAD v1.1 JSON file")
    parser.add_argument("-o", "--out", type=Path, required=True, help="directory for train.json and test.json")
    parser.add_argument("--test-articles", type=int, default=10, help="articles, from the end, that form the test part")
    args = parser.parse_args()
    whole = json.loads(args.squad.read_text(encoding="utf-8"))
    train, test = split(whole["data"], args.test_articles)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, articles in (("train", train), ("test", test)):
        part = {"version": whole.get("version", "1.1"), "data": articles}
        (args.out / f"{name}.json").write_text(json.dumps(part, ensure_ascii=False), encoding="utf-8")
        questions = sum(len(p["qas"]) for a in articles for p in a["paragraphs"])
        print(f"{name}: {len(articles)} articles ({articles[0]['title']} .. {articles[-1]['title']}), {questions} questions")


if __name__ == "__main__":
    main()
