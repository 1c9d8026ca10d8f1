"""The rule-based sentence splitter: tricky cases, then invariants on real English and Chinese text."""

from __future__ import annotations

import re

import pytest
from conftest import shared_file

from ptmcli.data.sentences import split_sentences

CASES = [
    # titles and fixed abbreviations never end a sentence before a capital
    ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
    ("He lives on St. Mark's Place near Mt. Hood.", ["He lives on St. Mark's Place near Mt. Hood."]),
    ("Fruit, e.g. apples, i.e. food. Then more.", ["Fruit, e.g. apples, i.e. food.", "Then more."]),
    ("It was cheap (cf. Smith et al. 2005). Later it rose.", ["It was cheap (cf. Smith et al. 2005).", "Later it rose."]),
    # initials
    ("J. R. R. Tolkien wrote it. It sold well.", ["J. R. R. Tolkien wrote it.", "It sold well."]),
    ("General Ulysses S. Grant won. The war ended.", ["General Ulysses S. Grant won.", "The war ended."]),
    ("It ended after World War I. The peace was short.", ["It ended after World War I.", "The peace was short."]),
    # dotted abbreviations: a boundary only before a common sentence opener
    ("The U.S. Senate voted. Taxes are low in the U.S. The state grew.",
     ["The U.S. Senate voted.", "Taxes are low in the U.S.", "The state grew."]),
    ("In 146 B.C. Athens fell to Rome.", ["In 146 B.C. Athens fell to Rome."]),
    ("He lived in Washington, D.C. He worked there.", ["He lived in Washington, D.C.", "He worked there."]),
    ("Apple Inc. is large. He joined Apple Inc. The pay was good.",
     ["Apple Inc. is large.", "He joined Apple Inc.", "The pay was good."]),
    # abbreviations before numbers, months
    ("See No. 5 on p. 12 from Jan. 3, 1990. It is short.", ["See No. 5 on p. 12 from Jan. 3, 1990.", "It is short."]),
    # decimals, URLs, e-mail addresses
    ("Pi is 3.14 or so. It is irrational.", ["Pi is 3.14 or so.", "It is irrational."]),
    ("Visit www.example.com/a.html today. Mail info@example.org. Thanks!",
     ["Visit www.example.com/a.html today.", "Mail info@example.org.", "Thanks!"]),
    # ellipses, ! and ?
    ("Wait... What happened? Nothing! Really?! Yes.",
     ["Wait...", "What happened?", "Nothing!", "Really?!", "Yes."]),
    ("He paused … then went on. It was late…  Everyone left.",
     ["He paused … then went on.", "It was late…", "Everyone left."]),
    # quotes and brackets after the terminal punctuation
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ('"Why?" she asked. (It was late.) [Nobody knew!] Done.',
     ['"Why?" she asked.', "(It was late.)", "[Nobody knew!]", "Done."]),
    ("\u201cGo.\u201d He went.", ["\u201cGo.\u201d", "He went."]),
    # numbered and lettered list items
    ("1. Preheat the oven. 2. Mix the flour.", ["1. Preheat the oven.", "2. Mix the flour."]),
    ("a. First option. b. Second option.", ["a. First option.", "b. Second option."]),
    ("IV. Results are given here.", ["IV. Results are given here."]),
    # lowercase next word: never a boundary
    ("Apples, pears, etc. are fruit. Bananas too.", ["Apples, pears, etc. are fruit.", "Bananas too."]),
    # CJK terminators need no space
    ("今天天气很好。我们去公园吧！你来吗？好的。", ["今天天气很好。", "我们去公园吧！", "你来吗？", "好的。"]),
    ("他说：「好。」然后走了。", ["他说：「好。」", "然后走了。"]),
    ("太好了!下次还来。", ["太好了!", "下次还来。"]),
    ("1.接电源没有几分钟. 2.摄像头用不起来.", ["1.接电源没有几分钟.", "2.摄像头用不起来."]),
    # edge cases
    ("No terminal punctuation here", ["No terminal punctuation here"]),
    ("  Leading and trailing space.  ", ["Leading and trailing space."]),
    ("", []),
    ("   ", []),
]


@pytest.mark.parametrize("paragraph,expected", CASES)
def test_tricky_cases(paragraph, expected):
    assert split_sentences(paragraph) == expected


def _squeeze(text: str) -> str:
    return "".join(text.split())


def _english_paragraphs(limit: int) -> list[str]:
    path = shared_file("enwiki-sample/enwiki_sample.txt")
    paragraphs = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            line = line.rstrip("\n")
            if len(line) > 200 and not line.startswith("<"):
                paragraphs.append(line)
                if len(paragraphs) == limit:
                    break
    return paragraphs


def test_real_english_text_loses_nothing_and_splits_plausibly():
    paragraphs = _english_paragraphs(1500)
    sentences_seen = after_initial = 0
    for paragraph in paragraphs:
        sentences = split_sentences(paragraph)
        assert _squeeze("".join(sentences)) == _squeeze(paragraph)
        for previous, sentence in zip(sentences, sentences[1:], strict=False):
            assert not re.search(r"\b(?:Mr|Mrs|Dr|St|Prof|Gen|e\.g|i\.e|vs)\.$", previous), (previous, sentence)
            assert not sentence[0].islower(), (previous, sentence)
            after_initial += bool(re.search(r"\s[A-Z]\.$", previous))
        sentences_seen += len(sentences)
    # Initials ("Ulysses S. Grant") are common; a cut after one ("World War I.") is rare.
    assert after_initial < 0.005 * sentences_seen
    # Wikipedia prose: roughly 20-30 words a sentence, several sentences per long paragraph.
    words = sum(len(p.split()) for p in paragraphs)
    assert 15 < words / sentences_seen < 40
    assert sentences_seen > 2 * len(paragraphs)


def test_first_paragraph_of_anarchism():
    paragraph = _english_paragraphs(1)[0]
    assert paragraph.startswith("Anarchism is a political philosophy")
    sentences = split_sentences(paragraph)
    assert [s.split()[0] for s in sentences] == ["Anarchism", "Anarchism", "While"]


def test_real_chinese_reviews():
    path = shared_file("chinese/train.tsv")
    with open(path, encoding="utf-8") as file:
        rows = [line.rstrip("\n").split("\t", 1)[1] for line in list(file)[1:600]]
    multi = 0
    for text in rows:
        sentences = split_sentences(text)
        assert _squeeze("".join(sentences)) == _squeeze(text)
        for sentence in sentences[:-1]:
            # every sentence but the last ends at a terminator, possibly followed by closing quotes
            assert re.search(r"[。！？!?.…][\"'”’」』）)]*$", sentence), sentence
        for sentence in sentences:
            inner = sentence.rstrip("。！？!?”’」』）)\"'")
            assert not re.search(r"[。！？]", inner.rstrip("。！？")), sentence
        multi += len(sentences) > 1
    assert multi > 100
