"""Rule-based sentence splitting for the encoder's ``sentence_ends``.

One regular expression finds every candidate boundary (terminal punctuation,
then optional closing quotes or brackets, then whitespace; or a CJK terminator,
which needs no space after it). Most candidates are decided by a cheap test on
the next character; only a period is looked at more closely, by the word before
it. The splitter runs on every paragraph of a corpus, so it stays a single pass
with a few set lookups per candidate.

Decisions for a period followed by whitespace:

* next word starts lowercase: not a boundary ("etc. and", "e.g. the"), unless
  it is a lettered list item ("b. ");
* the word before is a title or a fixed abbreviation (Mr., Dr., St., e.g., vs.):
  not a boundary;
* an abbreviation that precedes numbers (No., pp., Jan., c.) before a digit:
  not a boundary;
* a bare number, letter or roman numeral that opens the sentence ("1. ", "a. ",
  "IV. "): a list item, not a boundary;
* an initial ("J. R. R. Tolkien"), a dotted abbreviation (U.S., B.C., Ph.D.) or a
  word such as Inc., Jr., etc.: a boundary only when the next word is a common
  sentence opener ("in the U.S. The state..." splits, "the U.S. Senate" does not);
* anything else: a boundary.

Decimals (3.14), URLs and e-mail addresses have no space after their periods,
so they are never candidates.
"""

from __future__ import annotations

import re

_CLOSERS = "\"'”’»)\\]}」』〉》】）"
_CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"

# Starts with a single character class so the regex engine can scan for it
# quickly; everything else is decided in Python, per candidate.
_CANDIDATE = re.compile(rf"[.!?…。！？][.!?…。！？]*[{_CLOSERS}]*\s*")
_CJK_TERMINATORS = frozenset("。！？")
_TERMINATORS = frozenset(".!?…。！？")
_CJK_TEXT = re.compile(rf"[{_CJK_CHARS}]")

_OPENERS = "\"'“‘«([{「『〈《【（"

# Never a sentence end before a capitalised word: titles and fixed abbreviations.
_FIXED = frozenset(
    """mr mrs ms mssrs messrs mme mlle dr prof st mt ft gen maj brig col lt sgt capt cmdr
    adm rev hon gov sen rep pres supt insp e.g i.e cf vs viz al approx esp incl dept univ
    assn bros fig figs eq eqs ref refs""".split()
)

# Precede numbers: "No. 5", "pp. 12", "Jan. 5", "c. 1500".
_BEFORE_NUMBERS = frozenset(
    """no nos vol vols p pp ch chap sec sect art op ed nr pt para c ca
    jan feb mar apr jun jul aug sep sept oct nov dec""".split()
)

# May end a sentence: split only when the next word is a common sentence opener.
_AMBIGUOUS = frozenset(
    """inc ltd co corp llc plc jr sr etc jan feb mar apr jun jul aug sep sept oct nov dec
    a.m p.m u.s u.k""".split()
)

_SENTENCE_OPENERS = frozenset(
    """The A An In It Its He She They We I You This That These Those There Their His Her
    Our My On At By For From To With After Before During However But And Or As When While
    Although Though Since If Because Some Many Most Several Other Others Both Each All No
    Not One Two Three Following Despite Today Then Thus Also About Another Over Under
    Between Within Until Later Furthermore Moreover Meanwhile Nevertheless Instead Such
    What Why How Where Who Which Unlike Like Further Finally First Second
    Afterwards Initially Eventually Here Once Only Upon Even Yet So Still""".split()
)

_DOTTED = re.compile(r"(?:[A-Za-z]{1,3}\.)+[A-Za-z]{1,3}")
_LIST_MARKER = re.compile(r"\d{1,3}|[A-Za-z]|[IVX]{1,5}|[ivx]{1,5}")


def _next_word(text: str, pos: int) -> str:
    """The word starting at ``pos``, without opening quotes or brackets."""
    end = pos
    length = len(text)
    while end < length and not text[end].isspace():
        end += 1
    return text[pos:end].lstrip(_OPENERS).rstrip(".,;:!?" + _CLOSERS)


def _starts_lettered_item(text: str, pos: int) -> bool:
    """A lowercase list marker such as "b. " or "c) " starts at ``pos``."""
    return text[pos + 1 : pos + 2] in (".", ")") and text[pos + 2 : pos + 3] in (" ", "")


def _period_ends_sentence(text: str, period: int, next_pos: int, sentence_start: int) -> bool:
    token_start = text.rfind(" ", sentence_start, period) + 1 or sentence_start
    token = text[token_start:period]
    if not token.isprintable():  # a tab, newline or no-break space inside: rare
        words = token.split()
        token = words[-1] if words else ""
        token_start = period - len(token)
    token = token.lstrip(_OPENERS)
    if not token:
        return True
    lowered = token.lower()
    if lowered in _FIXED:
        return False
    if lowered in _BEFORE_NUMBERS and text[next_pos].isdigit():
        return False
    if (
        token_start - sentence_start < 8
        and _LIST_MARKER.fullmatch(token)
        and not text[sentence_start:token_start].strip()
    ):
        return False
    if (
        lowered in _AMBIGUOUS
        or (len(token) == 1 and token.isupper())
        or ("." in token and _DOTTED.fullmatch(token))
    ):
        return _next_word(text, next_pos) in _SENTENCE_OPENERS
    return True


def split_sentences(paragraph: str) -> list[str]:
    """Split one paragraph into sentences, stripped of surrounding whitespace.

    Text without any terminal punctuation comes back as one sentence; an empty
    or blank paragraph gives an empty list.
    """
    sentences: list[str] = []
    start = 0
    length = len(paragraph)
    for match in _CANDIDATE.finditer(paragraph):
        first, cut = match.span()
        if cut >= length:
            break
        run = match.group()
        if "。" in run or "！" in run or "？" in run:
            pass  # CJK terminators end a sentence, with or without a space
        elif paragraph[cut - 1].isspace():
            if paragraph[cut].islower() and not _starts_lettered_item(paragraph, cut):
                continue
            if (
                run[0] == "."
                and run[1] not in _TERMINATORS
                and not _period_ends_sentence(paragraph, first, cut, start)
            ):
                continue
        elif run[0] == "." or not _CJK_TEXT.match(paragraph, cut):
            # No space after it: a decimal point, URL or e-mail address, unless an
            # ASCII ! or ? runs straight into CJK text.
            continue
        sentence = paragraph[start:cut].strip()
        if sentence:
            sentences.append(sentence)
        start = cut
    rest = paragraph[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences
