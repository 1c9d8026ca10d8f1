"""``ptm convert --to word2vec`` and ``--to onnx``, and loading checkpoints that lack heads.

Checkpoints are written here by ptm's own code (no transformers needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
from ptmcli.commands.convert import run
from ptmcli.convert.options import ConvertConfig
from ptmcli.convert.ptm_model import load_model
from ptmcli.convert.word2vec import read_word2vec
from ptmcli.errors import PtmError
from ptmcli.models.bert import BertConfig, BertForPreTraining
from ptmcli.models.gpt import GPTConfig, GPTForCausalLM
from ptmcli.tokenization.tokenizer import PtmTokenizer, TokenizerSettings
from ptmcli.tokenization.train import wordpiece_from_vocab

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s", "é", "中", "!"]


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


def tokenizer_dir(root: Path) -> Path:
    (root / "vocab").mkdir(parents=True)
    (root / "vocab" / "vocab.txt").write_text("".join(f"{t}\n" for t in VOCAB), encoding="utf-8")
    roles = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
    settings = TokenizerSettings(kind="wordpiece", lowercase=True, strip_accents=False, split_cjk=True,
                                 special_tokens=roles, special_set="bert")
    wordpiece_from_vocab(str(root / "vocab" / "vocab.txt"), settings).save(root / "tok")
    return root / "tok"


def bert_checkpoint(root: Path, objective: str | None = "mlm+nsp", drop: tuple[str, ...] = ()) -> Path:
    model = randomise(BertForPreTraining(BertConfig(len(VOCAB), 16, 2, 2, 24, max_position_embeddings=32)))
    model.tie_weights()
    weights = {k: v for k, v in state_dict_for_saving(model, model.tied_weights()).items() if not k.startswith(drop)}
    config = {"arch": "bert", "model": model.config.to_dict(), "objective": objective, "task": None}
    return save_checkpoint(root / "bert", config=config, weights=weights, tokenizer_dir=tokenizer_dir(root))


def gpt_checkpoint(root: Path) -> Path:
    model = randomise(GPTForCausalLM(GPTConfig(40, 16, 2, 2, 24, max_position_embeddings=32)))
    config = {"arch": "gpt", "model": model.config.to_dict(), "objective": "clm", "task": None}
    return save_checkpoint(root / "gpt", config=config, weights=state_dict_for_saving(model, {}), tokenizer_dir=None)


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_holds_the_input_embeddings_exactly(tmp_path, binary):
    ckpt = bert_checkpoint(tmp_path)
    out = tmp_path / ("vectors.bin" if binary else "vectors.txt")
    run(str(ckpt), str(out), ConvertConfig(to="word2vec", binary=binary))
    tokens, vectors = read_word2vec(out, binary)
    assert tokens == VOCAB
    embedding = load_file(str(ckpt / "model.safetensors"))["bert.embeddings.word_embeddings.weight"].numpy()
    np.testing.assert_array_equal(vectors, embedding)  # 9 significant digits: float32 survives exactly
    header = out.read_bytes().split(b"\n", 1)[0]
    assert header == f"{len(VOCAB)} 16".encode()
    with pytest.raises(PtmError, match="already exists"):
        run(str(ckpt), str(out), ConvertConfig(to="word2vec", binary=binary))


def test_word2vec_loads_in_gensim(tmp_path):
    gensim = pytest.importorskip("gensim", reason="gensim is not installed: the format is checked by read_word2vec")
    ckpt = bert_checkpoint(tmp_path)
    embedding = load_file(str(ckpt / "model.safetensors"))["bert.embeddings.word_embeddings.weight"].numpy()
    for binary in (False, True):
        run(str(ckpt), str(tmp_path / f"v{binary}"), ConvertConfig(to="word2vec", binary=binary))
        vectors = gensim.models.KeyedVectors.load_word2vec_format(str(tmp_path / f"v{binary}"), binary=binary)
        assert list(vectors.index_to_key) == VOCAB
        np.testing.assert_array_equal(vectors.vectors, embedding)


def onnxruntime_or_skip():
    return pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'ptm[onnx]')")


def test_onnx_encoder_and_mlm_match_torch(tmp_path):
    ort = onnxruntime_or_skip()
    ckpt = bert_checkpoint(tmp_path)
    summary = run(str(ckpt), str(tmp_path / "onnx"), ConvertConfig(to="onnx"))
    assert any("onnxruntime check" in note for note in summary["notes"])
    assert PtmTokenizer.load(tmp_path / "onnx").vocab_size == len(VOCAB)
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "pooler_output", "logits"]
    module, _, _ = load_model(ckpt)
    gen = torch.Generator().manual_seed(5)
    for batch, length in ((1, 5), (4, 17)):
        ids = torch.randint(0, len(VOCAB), (batch, length), generator=gen)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, length - 2:] = 0
        types = torch.randint(0, 2, (batch, length), generator=gen)
        got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()})
        with torch.no_grad():
            hidden = module.bert(ids, types, mask)
            want = [hidden, module.bert.pool(hidden), module.mlm(hidden)]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=1e-4)


def test_onnx_gpt_logits_match_torch(tmp_path):
    ort = onnxruntime_or_skip()
    ckpt = gpt_checkpoint(tmp_path)
    run(str(ckpt), str(tmp_path / "onnx"), ConvertConfig(to="onnx"))
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    module, _, _ = load_model(ckpt)
    ids = torch.randint(0, 40, (2, 13), generator=torch.Generator().manual_seed(0))
    logits, hidden = session.run(None, {"input_ids": ids.numpy()})
    with torch.no_grad():
        want = module.logits(module.gpt(ids))
    np.testing.assert_allclose(logits, want.numpy(), atol=1e-4, rtol=1e-4)


def test_loader_initialises_absent_heads_and_refuses_partial_ones(tmp_path):
    ckpt = bert_checkpoint(tmp_path, objective=None, drop=("mlm.", "nsp.", "bert.pooler."))
    module, config, initialised = load_model(ckpt)
    assert initialised == ["mlm", "nsp", "pooler"] and config["objective"] is None
    reference = load_file(str(ckpt / "model.safetensors"))
    assert torch.equal(module.bert.embeddings.word_embeddings.weight, reference["bert.embeddings.word_embeddings.weight"])
    assert module.mlm.decoder.weight is module.bert.embeddings.word_embeddings.weight  # re-tied
    save_file({k: v for k, v in reference.items() if k != "bert.layers.1.ffn.up.bias"}, str(ckpt / "model.safetensors"))
    with pytest.raises(PtmError, match="missing 1 tensor"):
        load_model(ckpt)
    full = load_file(str(bert_checkpoint(tmp_path / "full") / "model.safetensors"))
    save_file({**reference, "mlm.bias": full["mlm.bias"]}, str(ckpt / "model.safetensors"))
    with pytest.raises(PtmError, match="part 'mlm' is incomplete"):
        load_model(ckpt)
    with pytest.raises(PtmError, match="no mlm head .* that BertForMaskedLM needs; --hf-class can be BertModel"):
        save_file(reference, str(ckpt / "model.safetensors"))
        run(str(ckpt), str(tmp_path / "hf"), ConvertConfig(hf_class="BertForMaskedLM"))
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("task_type", ["classification", "token-classification"])
def test_onnx_task_head_matches_torch(tmp_path, task_type):
    from ptmcli.models.heads import build_task_model

    ort = onnxruntime_or_skip()
    task = {"type": task_type, "labels": ["O", "B-X", "I-X"]}
    model = randomise(build_task_model("bert", BertConfig(len(VOCAB), 16, 2, 2, 24, max_position_embeddings=32), task))
    config = {"arch": "bert", "model": model.config.to_dict(), "objective": None, "task": task}
    ckpt = save_checkpoint(tmp_path / "task", config=config, weights=state_dict_for_saving(model, {}),
                           tokenizer_dir=tokenizer_dir(tmp_path))
    run(str(ckpt), str(tmp_path / "onnx"), ConvertConfig(to="onnx"))
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = torch.randint(0, len(VOCAB), (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    types = torch.zeros_like(ids)
    (logits,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()})
    with torch.no_grad():
        want = model(ids, types, mask)
    assert logits.shape == ((3, 3) if task_type == "classification" else (3, 9, 3))
    np.testing.assert_allclose(logits, want.numpy(), atol=1e-4, rtol=1e-4)
