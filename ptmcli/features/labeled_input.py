"""``--task``: labeled data as input, laid out exactly as ``ptm finetune`` lays it out.

INPUT is read by the reader ``ptm finetune`` uses for ``--train`` (TSV/CSV with
a header, JSON lines, CoNLL columns; the same column detection and
``--text-columns``), one record per example, labels ignored, streamed as it
is read. Each example is then encoded by ``ptmcli.tasks.encode``, the code
that builds finetuning's inputs, so row i holds the vectors of exactly the
token ids a finetuned model reads for example i: ``[CLS] A [SEP] B [SEP]`` for
BERT, ``start A delim B end`` for GPT, ``bos A eos`` for ELMo, cut to the same
length.

Every position is an output (the special tokens included), so ``--pool mean``
is the mean over the real tokens that a ``--mode features`` model pools,
``--pool cls`` position 0 and ``--pool last`` the last real token. With
token-classification data each word owns the sub-tokens finetuning gives it
(encoded word by word), so ``--words first`` is the position whose logits a
tagger reads. This is what ``ptm finetune --train-features`` trains on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ptmcli.errors import PtmError
from ptmcli.features.config import FEATURE_TASKS
from ptmcli.features.encoding import EncodedText
from ptmcli.features.readers import PAIR_SEPARATOR, TextRecord, display_name


def check_task(task: str) -> None:
    if task not in FEATURE_TASKS:
        raise PtmError(f"--task {task!r}: features can be extracted for {', '.join(FEATURE_TASKS)}")


def iter_labeled_records(path: str, task: str, text_columns: Sequence[str] | None = None) -> Iterator[TextRecord]:
    """One record per example of the labeled file ``path``, as ``ptm finetune --task`` reads it."""
    from ptmcli.tasks.readers import stream_labeled

    check_task(task)
    found = stream_labeled(path, task, text_columns=text_columns, require_labels=False)
    for index, example in enumerate(found):
        texts = example.texts
        yield TextRecord(index, example.line, texts[0], texts[1] if len(texts) > 1 else None,
                         PAIR_SEPARATOR.join(texts), example.words)


def _word_owners(word_index: Sequence[int], length: int) -> list[int]:
    """Per position, the word it belongs to (-1: special tokens, words cut off).

    A word's sub-tokens run from its first position to the next present word's
    first position, the last word's up to the end token.
    """
    owners = [-1] * length
    present = [(int(position), word) for word, position in enumerate(word_index) if position >= 0]
    for k, (start, word) in enumerate(present):
        end = present[k + 1][0] if k + 1 < len(present) else length - 1
        owners[start:end] = [word] * (end - start)
    return owners


def encode_for_task(records: list[TextRecord], tokenizer, task: str, arch: str, max_length: int,
                    with_words: bool, source: str = "-") -> tuple[list[EncodedText], int]:
    """(encoded texts, how many were cut to ``max_length``) for a group of ``--task`` records."""
    from ptmcli.tasks.encode import EncodeReport, encode_examples
    from ptmcli.tasks.examples import LabeledExample

    if with_words and task != "token-classification":
        raise PtmError(f"--words with --task {task}: only token-classification data has words to align "
                       "(use --pool for one vector per text)")
    examples = [LabeledExample(texts=(r.text_a,) if r.text_b is None else (r.text_a, r.text_b), label=None,
                               words=r.words, line=r.line) for r in records]
    report = EncodeReport()
    rows = encode_examples(examples, tokenizer, task, arch, max_length, [], source=display_name(source), report=report)
    out = []
    for record, row in zip(records, rows):
        ids = row["input_ids"].tolist()
        word_ids = words = None
        if with_words:
            word_ids = _word_owners(row["word_index"].tolist(), len(ids))
            words = list(record.words or ())
        out.append(EncodedText(record, ids, row["token_type_ids"].tolist(), 0, len(ids), word_ids, words, False))
    return out, report.truncated
