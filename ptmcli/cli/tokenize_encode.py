"""`ptm tokenize encode`: flags only; the work is in ptmcli.commands.tokenize_encode."""

from __future__ import annotations

import typer

SHORT_HELP = "Encode text into Arrow token shards for pretraining."
HELP = """Encode text into a shard directory (manifest.json + part-NNNNN.arrow) for `ptm pretrain`.

Each document becomes one row: its token ids, where its sentences end, and which tokens start a word (for whole-word masking). INPUT is any number of files, globs, directories or - for stdin, in any format `ptm tokenize train` reads (text, jsonl, wikiextractor, tsv/csv; gzip or not).

The directory appears only when complete; on an error nothing is left behind. Under torchrun each rank encodes its share of the inputs and rank 0 writes the manifest.

Examples:

ptm tokenize encode corpus/*.txt --tokenizer tok/ -o shards/

zcat wiki.jsonl.gz | ptm tokenize encode - --tokenizer tok/ -o shards/ --format jsonl

paste train.en train.de | ptm tokenize encode - --pairs --tokenizer tok/ -o pairs/
"""


def encode(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Text files, globs, directories, or - for stdin."),
    tokenizer: str = typer.Option(..., "--tokenizer", "-t", metavar="TEXT", help="Tokenizer directory (from `ptm tokenize train`)."),
    out: str = typer.Option(..., "--output", "-o", "--out", metavar="TEXT", help="Shard directory to create."),
    workers: int = typer.Option(None, "--workers", "-j", metavar="N", help="Encoding processes (default: all cores); 1 encodes in this process.", show_default=False),
    shard_size: str = typer.Option("256MB", "--shard-size", metavar="TEXT", help="Start a new shard file beyond this size (e.g. 64MB, 1GB)."),
    fmt: str = typer.Option("auto", "--format", metavar="TEXT", help="Input format: auto, text, jsonl, wikiextractor, tsv, csv."),
    text_field: str = typer.Option("text", "--text-field", metavar="TEXT", help="JSON field (jsonl) or column name (tsv/csv) holding the text."),
    tsv_column: str = typer.Option(None, "--tsv-column", metavar="TEXT", help="TSV/CSV column holding the text, by name or 0-based index.", show_default=False),
    errors: str = typer.Option("strict", "--errors", metavar="TEXT", help="Invalid UTF-8 or unparsable lines: strict (stop), replace, or skip."),
    overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Replace an existing shard directory (only once the new one is complete)."),
    split_sentences: bool = typer.Option(True, "--split-sentences/--no-split-sentences", metavar="", help="Split paragraphs into sentences; without it each paragraph (line) is one sentence."),
    word_starts: bool = typer.Option(True, "--word-starts/--no-word-starts", metavar="", help="Store which tokens start a word (for whole-word masking)."),
    word_segmenter: str = typer.Option("tokenizer", "--word-segmenter", metavar="TEXT", help="Where words start, for whole-word masking: tokenizer (its own words: whitespace and punctuation, each CJK character alone) or jieba (Chinese words from jieba's segmentation, as Chinese BERT-wwm; pip install jieba)."),
    document_boundary: str = typer.Option("blank", "--document-boundary", metavar="TEXT", help="Plain text: what ends a document: blank (a blank line, BERT's layout), line (every line is a document: one-sentence- or one-paragraph-per-line corpora) or none (each file is one document)."),
    pairs: bool = typer.Option(False, "--pairs", metavar="", help="The inputs hold source/target pairs (TSV `source<TAB>target` or JSONL), for sequence-to-sequence training: writes pair shards (a target column beside the source)."),
    pair_fields: str = typer.Option("source,target", "--pair-fields", metavar="TEXT", help="With --pairs and JSONL input: the JSON keys of the source and the target."),
    target_tokenizer: str = typer.Option(None, "--target-tokenizer", metavar="DIR", help="With --pairs: encode the targets with this tokenizer (translation: the other language's) [default: --tokenizer for both sides].", show_default=False),
    progress: bool = typer.Option(None, "--progress/--no-progress", metavar="", help="Progress bar on stderr (default: when stderr is a terminal).", show_default=False),
) -> None:
    from ptmcli.commands.tokenize_encode import run

    run(inputs=inputs, tokenizer=tokenizer, out=out, workers=workers, shard_size=shard_size, fmt=fmt,
        text_field=text_field, tsv_column=tsv_column, errors=errors, overwrite=overwrite,
        split_sentences=split_sentences, word_starts=word_starts, word_segmenter=word_segmenter,
        document_boundary=document_boundary, pairs=pairs, pair_fields=pair_fields,
        target_tokenizer=target_tokenizer, progress=progress)
