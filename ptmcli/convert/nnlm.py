"""The NNLM in ``ptm convert``: ``--to word2vec`` writes its embedding rows; transformers has no such model."""

from __future__ import annotations

from ptmcli.convert.archs import ArchSpec
from ptmcli.errors import PtmError
from ptmcli.models.nnlm import EMBEDDINGS, FeedForwardLM, NNLMConfig


def _no_transformers_form(*_args):
    raise PtmError("the NNLM has no transformers form; convert its word vectors --to word2vec")


SPEC = ArchSpec(
    arch="nnlm",
    model_type="",  # transformers has no such model: no config.json names it
    classes={},
    config_from_hf=_no_transformers_form,
    config_to_hf=_no_transformers_form,
    weights_from_hf=_no_transformers_form,
    weights_to_hf=_no_transformers_form,
    build_model=lambda model: FeedForwardLM(NNLMConfig.from_dict(model)),
    config_class=NNLMConfig.from_dict,
    input_embedding=EMBEDDINGS,
)
