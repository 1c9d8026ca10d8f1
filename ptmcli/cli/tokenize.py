"""`ptm tokenize`: train tokenizers, encode text to shards, show tokens."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ptmcli.cli import tokenize_encode

app = typer.Typer(help="Train a tokenizer, encode text into Arrow shards, or show how text tokenizes.", no_args_is_help=True)

# Choices are spelled out here so that `ptm --help` imports nothing heavy;
# tests check they match ptmcli.tokenization.specials and ptmcli.textio.inputs.
class Model(str, Enum):
    wordpiece = "wordpiece"
    bpe = "bpe"
    bytelevel = "bytelevel"
    unigram = "unigram"
    sp_bpe = "sp-bpe"
    word = "word"


class SpecialSet(str, Enum):
    bert = "bert"
    gpt = "gpt"
    roberta = "roberta"
    t5 = "t5"
    roberta_sentinels = "roberta-sentinels"


class InputFormat(str, Enum):
    auto = "auto"
    text = "text"
    jsonl = "jsonl"
    wikiextractor = "wikiextractor"
    tsv = "tsv"
    csv = "csv"


class ErrorMode(str, Enum):
    strict = "strict"
    replace = "replace"
    skip = "skip"


INPUT_HELP = "Text files, glob patterns, directories (read recursively) or - for stdin; .gz is read as is."

TRAIN_SHORT_HELP = "Train a tokenizer (WordPiece, BPE, byte-level BPE, unigram, whole words) on raw text."
TRAIN_HELP = (
    "Train a tokenizer on raw text and write it to a directory (tokenizer.json or tokenizer.model, "
    "plus tokenizer_config.json).\n\n"
    "Input is plain text (one paragraph per line, a blank line between documents), JSON lines, "
    "WikiExtractor output or TSV/CSV; the format is detected per file unless --format is given.\n\n"
    "Defaults depend on --model: wordpiece lowercases, strips accents, splits CJK characters and uses "
    "BERT's special tokens; bpe is the same but cased; bytelevel is cased with GPT-2's <|endoftext|>; "
    "unigram and sp-bpe (sentencepiece) are cased with BERT's special tokens; word (one id per whole word, "
    "for static word vectors) lowercases like wordpiece, keeps the --max-vocab most frequent words seen at least "
    "--min-count times, and maps every other word to [UNK]."
)
TRAIN_EPILOG = """Examples:

  ptm tokenize train corpus/*.txt --model wordpiece --vocab-size 30000 -o tok/

  zcat wiki.jsonl.gz | ptm tokenize train - --model bytelevel --vocab-size 50000 -o tok-gpt/

  ptm tokenize train --vocab bert-base-uncased/vocab.txt -o tok-bert/   # no training

  ptm tokenize train corpus.txt --model word --min-count 5 --max-vocab 100000 -o tok-words/   # for word2vec, GloVe
"""


@app.command("train", help=TRAIN_HELP, short_help=TRAIN_SHORT_HELP, epilog=TRAIN_EPILOG)
def train(
    inputs: list[str] | None = typer.Argument(None, metavar="INPUT", help=INPUT_HELP, show_default=False),
    output: Path = typer.Option(..., "--output", "-o", metavar="PATH", help="Directory to write the tokenizer to."),
    model: Model = typer.Option(Model.wordpiece, "--model", "-m", help="Tokenizer model."),
    vocab_size: int = typer.Option(30000, "--vocab-size", "--max-vocab", metavar="N", help="Vocabulary size, special tokens included (--model word: the most frequent words kept)."),
    min_frequency: int = typer.Option(2, "--min-frequency", "--min-count", metavar="N", help="Merge only pairs seen this often (not used by sentencepiece models); --model word: keep only words seen this often."),
    limit_alphabet: int = typer.Option(1000, "--limit-alphabet", metavar="N", help="wordpiece, bpe: keep this many of the most frequent characters; rarer ones become [UNK]. Raise it for Chinese or Japanese (each ideograph is a character: 5000 or more)."),
    overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Replace the output directory if it exists."),
    lowercase: bool | None = typer.Option(None, "--lowercase/--cased", metavar="", help="Lowercase text first.", show_default="per model"),
    strip_accents: bool | None = typer.Option(None, "--strip-accents/--keep-accents", metavar="", help="Remove accents.", show_default="wordpiece, bpe: when lowercasing"),
    split_cjk: bool | None = typer.Option(None, "--split-cjk/--no-split-cjk", metavar="", help="Make each CJK ideograph its own word.", show_default="wordpiece, bpe: on"),
    special_tokens: SpecialSet | None = typer.Option(None, "--special-tokens", help="Special-token set: bert ([PAD] [UNK] [CLS] [SEP] [MASK]), gpt (<|endoftext|>), roberta (<s> <pad> </s> <unk> <mask>), t5 (<pad> </s> <unk> and 100 sentinels <extra_id_0> ... <extra_id_99>, for --objective span-corruption), roberta-sentinels (roberta's and the 100 sentinels: span corruption with --arch bart).", show_default="per model"),
    vocab: Path | None = typer.Option(None, "--vocab", metavar="PATH", help="Build a wordpiece tokenizer from this BERT vocab.txt instead of training."),
    input_format: InputFormat = typer.Option(InputFormat.auto, "--format", help="Input format."),
    text_field: str = typer.Option("text", "--text-field", metavar="TEXT", help="JSONL: the field (or dotted path) holding the text."),
    tsv_column: str | None = typer.Option(None, "--tsv-column", metavar="TEXT", help="TSV/CSV: the text column, by header name or 0-based index."),
    errors: ErrorMode = typer.Option(ErrorMode.strict, "--errors", help="Invalid UTF-8 or unparsable lines: stop (strict), replace bad bytes, or skip the line."),
    max_length: int = typer.Option(512, "--max-length", metavar="N", help="Longest sequence a model using this tokenizer takes (model_max_length)."),
) -> None:
    from ptmcli.commands.tokenize_train import TrainRequest, run

    run(TrainRequest(
        inputs=tuple(inputs or ()), output=str(output), model=model.value, vocab_size=vocab_size,
        min_frequency=min_frequency, limit_alphabet=limit_alphabet, overwrite=overwrite, lowercase=lowercase, strip_accents=strip_accents,
        split_cjk=split_cjk, special_tokens=special_tokens.value if special_tokens else None,
        vocab=str(vocab) if vocab else None, input_format=input_format.value, text_field=text_field,
        tsv_column=tsv_column, errors=errors.value, max_length=max_length,
    ))


app.command("encode", help=tokenize_encode.HELP, short_help=tokenize_encode.SHORT_HELP)(tokenize_encode.encode)


SHOW_SHORT_HELP = "Show how text tokenizes: tokens and ids per line."
SHOW_HELP = (
    "Tokenize each TEXT argument, or each line of stdin, and print its tokens and ids (no special "
    "tokens added).\n\n"
    "On a terminal the output is a table; in a pipeline it is one line per input line: tokens, a tab, "
    "then ids. --ids, --tokens and --json choose one format."
)
SHOW_EPILOG = """Examples:

  ptm tokenize show --tokenizer tok/ "Tokenizers split words into pieces."

  head -3 corpus.txt | ptm tokenize show --tokenizer tok/ --ids

  ptm tokenize show --tokenizer tok/ --json < sentences.txt | jq .tokens
"""


@app.command("show", help=SHOW_HELP, short_help=SHOW_SHORT_HELP, epilog=SHOW_EPILOG)
def show(
    texts: list[str] | None = typer.Argument(None, metavar="TEXT", help="Texts to tokenize; stdin lines if none.", show_default=False),
    tokenizer: Path = typer.Option(..., "--tokenizer", "-t", metavar="PATH", help="Tokenizer directory (or a checkpoint directory)."),
    ids: bool = typer.Option(False, "--ids", metavar="", help="Print only ids, space-separated, one line per input."),
    tokens: bool = typer.Option(False, "--tokens", metavar="", help="Print only tokens, space-separated, one line per input."),
    as_json: bool = typer.Option(False, "--json", metavar="", help='Print one JSON object per input: {"text", "tokens", "ids"}.'),
) -> None:
    from ptmcli.commands.tokenize_show import run

    run(str(tokenizer), texts or None, ids=ids, tokens=tokens, as_json=as_json)
