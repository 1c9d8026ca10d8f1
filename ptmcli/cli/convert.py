"""`ptm convert`: flags come from ConvertConfig's fields; the work is in ptmcli.commands.convert."""

from __future__ import annotations

import inspect

import typer

from ptmcli.config_fields import cli_parameters, with_parameters
from ptmcli.convert.options import ConvertConfig

SHORT_HELP = "Convert checkpoints to and from Hugging Face transformers, word2vec/GloVe vectors and ONNX."
HELP = """Convert SRC into DST, losslessly where the formats allow.

SRC is a ptm checkpoint (or run directory) or a Hugging Face model directory; the direction follows from it. BERT (BertModel, BertForPreTraining, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification) and GPT-2 (GPT2LMHeadModel, GPT2Model) convert both ways, tokenizer included. Weights are read from model.safetensors (sharded too) or, through torch.load(weights_only=True) only, pytorch_model.bin; they are written as safetensors, tied weights once.

--to word2vec writes the input token embeddings in word2vec format (gensim, fastText); --to onnx writes model.onnx and the tokenizer. A word-vector file (word2vec text or binary, GloVe text, fastText .vec) as SRC becomes a checkpoint of static vectors, or with --to word2vec a word2vec file. DST appears only when complete; on an error nothing is left behind.

Examples:

ptm convert path/to/bert-base-uncased ckpt/            (Hugging Face -> ptm)

ptm convert runs/bert-mini hf-bert/                    (ptm -> Hugging Face, latest checkpoint)

ptm convert ckpt/ hf-encoder/ --hf-class BertModel     (only the encoder)

ptm convert ckpt/ vectors.txt --to word2vec

ptm convert ckpt/ onnx-dir/ --to onnx

ptm convert glove.6B.300d.txt glove-ckpt/              (vectors -> a static checkpoint)
"""


def _convert(src: str, dst: str, **flags) -> None:
    from ptmcli.commands.convert import run
    from ptmcli.config_fields import merge

    run(src, dst, merge(ConvertConfig, {}, flags))


_POSITIONAL = [
    inspect.Parameter("src", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                      default=typer.Argument(..., metavar="SRC", help="ptm checkpoint, run directory, Hugging Face model directory, or word-vector file.")),
    inspect.Parameter("dst", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                      default=typer.Argument(..., metavar="DST", help="Output directory (a file for --to word2vec).")),
]

convert = with_parameters(_convert, _POSITIONAL + cli_parameters(ConvertConfig))
