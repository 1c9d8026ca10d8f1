"""Feature extraction speed: ptm's pipeline against transformers on the same weights, SST-2 dev.

Both sides turn raw sentences into one vector each (the last layer, mean over
the positions) with the same weights, batch size and precision, in the same run:

  (a) reference: a ``transformers`` ``BertModel`` (``GPT2Model``) built from the
      ptm checkpoint's weights (``state_dict_to_hf``); its fast tokenizer
      (the checkpoint's tokenizer.json); batches of 32 in file order, padded
      to the longest; mean over the attention mask; ``torch.inference_mode``;
  (b) ptm: ``FeatureExtractor`` with ``--layers -1 --pool mean`` and the same
      batch size: batches sorted by length inside a chunk, rows back in order.

Timings alternate (a)/(b) for ``--repeats`` rounds and the medians give
sentences/s and the ratio (b)/(a). The largest difference between the two
sides' vectors is printed too (they must agree). GPT inputs on both sides are
``<end> text`` (ptm's GPT framing); the reference pools over the text positions.
Without a GPT checkpoint a randomly initialised gpt-mini with the BERT
checkpoint's tokenizer stands in: speed does not depend on the weights.

    python benchmarks/bench_extract_features.py [--checkpoint runs/bert-mini-enwiki]
        [--gpt-checkpoint runs/gpt-mini-enwiki] [--repeats 3] [--threads 1] [--precision fp32]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ptmcli.features.extract import FeatureExtractor  # noqa: E402
from ptmcli.features.layers import build_plan  # noqa: E402
from ptmcli.features.model import load_feature_model  # noqa: E402
from ptmcli.features.readers import TextRecord  # noqa: E402
from ptmcli.training.device import autocast  # noqa: E402

SST2_DEV = REPO.parent / "shared" / "data" / "sst2" / "dev.tsv"


def read_sst2(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [row["sentence"].strip() for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


def ptm_vectors(model, texts: list[str], batch_size: int, precision: str) -> np.ndarray:
    plan = build_plan("-1", model.num_layers, "none", model.arch, None, None, {}, str(model.path))
    extractor = FeatureExtractor(model, plan, pool="mean", batch_size=batch_size, precision=precision)
    records = (TextRecord(i, i + 1, t, None, t) for i, t in enumerate(texts))
    return np.stack([row.values[0] for row in extractor.rows(records)])


def hf_tokenizer(ckpt: Path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(ckpt / "tokenizer.json")),
                                   pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")


def hf_bert(model):
    import transformers

    cfg = model.model.config
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps, pad_token_id=cfg.pad_token_id), add_pooling_layer=True)
    from ptmcli.models.bert import state_dict_to_hf

    state = {k.removeprefix("bert."): v for k, v in state_dict_to_hf(model.model.state_dict()).items() if k.startswith("bert.")}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not [k for k in missing if "position_ids" not in k] and not unexpected, (missing, unexpected)
    return hf.eval()


def hf_gpt2(model):
    import transformers

    from ptmcli.models.gpt import state_dict_to_hf

    cfg = model.model.config
    end = model.tokenizer.eos_id if model.tokenizer.eos_id is not None else model.tokenizer.sep_id
    hf = transformers.GPT2Model(transformers.GPT2Config(
        bos_token_id=end, eos_token_id=end,
        vocab_size=cfg.vocab_size, n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size, n_positions=cfg.max_position_embeddings, layer_norm_epsilon=cfg.layer_norm_eps,
        activation_function="gelu_new" if cfg.gelu == "tanh" else "gelu"))
    state = {k.removeprefix("transformer."): v for k, v in state_dict_to_hf(model.model.state_dict()).items() if k.startswith("transformer.")}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not [k for k in missing if ".attn.bias" not in k and "masked_bias" not in k] and not unexpected, (missing, unexpected)
    return hf.eval()


def reference_bert(hf, tok, texts: list[str], batch_size: int, max_length: int, precision: str) -> np.ndarray:
    out = []
    with torch.inference_mode(), autocast(precision, torch.device("cpu")):
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = hf(**enc).last_hidden_state.float()
            mask = enc["attention_mask"][..., None].float()
            out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def reference_gpt2(hf, tok, texts: list[str], batch_size: int, max_length: int, start_id: int, precision: str) -> np.ndarray:
    out = []
    with torch.inference_mode(), autocast(precision, torch.device("cpu")):
        for start in range(0, len(texts), batch_size):
            ids = [[start_id, *row][:max_length] for row in tok(texts[start : start + batch_size], add_special_tokens=False)["input_ids"]]
            width = max(len(row) for row in ids)
            input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
            hidden = hf(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
            text_mask = mask.clone()
            text_mask[:, 0] = 0  # the start token is context, as in ptm's GPT framing
            weights = text_mask[..., None].float()
            out.append(((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).numpy())
    return np.concatenate(out)


def random_gpt_checkpoint(tokenizer_dir: Path, target: Path) -> Path:
    from ptmcli.models import gpt
    from ptmcli.tokenization.tokenizer import PtmTokenizer
    from ptmcli.training.checkpoint import save_checkpoint, state_dict_for_saving

    torch.manual_seed(0)
    config = gpt.preset_config("gpt-mini", vocab_size=PtmTokenizer.load(tokenizer_dir).vocab_size)
    model = gpt.GPTForCausalLM(config)
    return save_checkpoint(target, config={"arch": "gpt", "model": config.to_dict(), "objective": "clm", "task": None,
                                           "training": {"seq_len": 128}},
                           weights=state_dict_for_saving(model, model.tied_weights()), tokenizer_dir=tokenizer_dir)


def compare(name: str, model, reference, texts: list[str], batch_size: int, repeats: int, precision: str) -> dict:
    ours = ptm_vectors(model, texts, batch_size, precision)
    theirs = reference()
    diff = float(np.abs(ours - theirs).max())
    timings: dict[str, list[float]] = {"transformers": [], "ptm": []}
    for _ in range(repeats):
        for side, step in (("transformers", reference), ("ptm", lambda: ptm_vectors(model, texts, batch_size, precision))):
            start = time.perf_counter()
            step()
            timings[side].append(time.perf_counter() - start)
    hf_rate = len(texts) / statistics.median(timings["transformers"])
    ptm_rate = len(texts) / statistics.median(timings["ptm"])
    print(f"{name:5s} {precision:5s} transformers {hf_rate:8.1f} sent/s   ptm {ptm_rate:8.1f} sent/s   "
          f"ratio {ptm_rate / hf_rate:5.2f}x   max |diff| {diff:.2e}")
    return {"model": name, "precision": precision, "transformers_per_s": hf_rate, "ptm_per_s": ptm_rate,
            "ratio": ptm_rate / hf_rate, "max_abs_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "runs" / "bert-mini-enwiki"))
    parser.add_argument("--gpt-checkpoint", default=str(REPO / "runs" / "gpt-mini-enwiki"))
    parser.add_argument("--data", default=str(SST2_DEV))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = read_sst2(Path(args.data))
    print(f"{len(texts)} SST-2 dev sentences, batch {args.batch_size}, {args.threads} thread(s), medians of {args.repeats}")

    bert_model = load_feature_model(args.checkpoint)
    tok = hf_tokenizer(bert_model.path)
    hf = hf_bert(bert_model)
    compare("bert", bert_model, lambda: reference_bert(hf, tok, texts, args.batch_size, bert_model.max_length, args.precision),
            texts, args.batch_size, args.repeats, args.precision)

    with tempfile.TemporaryDirectory() as scratch:
        gpt_path = Path(args.gpt_checkpoint)
        try:
            gpt_model = load_feature_model(gpt_path)
        except Exception as err:  # noqa: BLE001 - any unusable checkpoint: fall back to random weights
            print(f"(no usable GPT checkpoint at {gpt_path}: {err}; timing a random gpt-mini instead)")
            gpt_model = load_feature_model(random_gpt_checkpoint(bert_model.path, Path(scratch) / "gpt"))
        tok = hf_tokenizer(gpt_model.path)
        hf = hf_gpt2(gpt_model)
        start_id = gpt_model.tokenizer.eos_id if gpt_model.tokenizer.eos_id is not None else gpt_model.tokenizer.sep_id
        compare("gpt", gpt_model,
                lambda: reference_gpt2(hf, tok, texts, args.batch_size, gpt_model.max_length, start_id, args.precision),
                texts, args.batch_size, args.repeats, args.precision)


if __name__ == "__main__":
    main()
