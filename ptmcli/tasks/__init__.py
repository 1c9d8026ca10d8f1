"""Labeled data for finetuning and evaluation: readers, encoding, cached shards, metrics.

- ``readers`` (with ``examples``, ``conll``): TSV/CSV/JSONL/CoNLL files -> ``LabeledExample``s;
- ``labels``: the label vocabulary taken from training data, and label -> id;
- ``encode``: examples -> model inputs for an input style (bert, gpt, elmo);
- ``labeled_shards``: encoded rows in ``kind: "labeled"`` Arrow shards, cached by content hash;
- ``collate``: rows -> padded torch tensors;
- ``squad``, ``qa_windows``, ``qa_answers``, ``qa_metrics``: extractive question answering (SQuAD);
- ``seq2seq_data``: source/target text pairs (TSV, JSONL, parallel files);
- ``metrics``: accuracy, F1, MCC, correlations, conlleval-style entity scores.

See docs/tasks-data.md for the formats and rules.
"""

from __future__ import annotations

TASKS = ("classification", "pair-classification", "regression", "token-classification", "multiple-choice")
# Extractive question answering reads SQuAD files of its own (``squad``, ``qa_windows``), not labeled columns.
QA = "qa"
# Sequence-to-sequence reads source/target pairs (``seq2seq_data``) and trains an encoder-decoder's own decoder.
SEQ2SEQ = "seq2seq"
FINETUNE_TASKS = (*TASKS, QA, SEQ2SEQ)
