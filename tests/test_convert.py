"""``ptm convert`` against transformers: tiny random models built here, converted both ways.

Parity: hidden states and logits of the converted model equal the original's
within 1e-5 (fp32) for every supported class; HF -> ptm -> HF gives identical
tensors; a ptm-native checkpoint converted to HF loads with ``from_pretrained``
and computes the same outputs; the tokenizer tokenizes as it did.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ptmcli.cli.main import main
from ptmcli.commands.convert import run
from ptmcli.convert.options import ConvertConfig
from ptmcli.convert.ptm_model import load_model
from ptmcli.errors import PtmError
from ptmcli.tokenization.tokenizer import PtmTokenizer

transformers = pytest.importorskip("transformers")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s", "a", "e", "hello",
         "world", ",", ".", "!", "dog", "##gy", "run", "##ning", "中", "is", "it", "un", "##know", "##n", "x", "##x"]
TEXTS = ["The cats sat on a Mat, hello world!", "dóggy runnIng 中文 unknown [MASK] xx", "  É e   e. "]
BERT = {"vocab_size": len(VOCAB), "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 24, "max_position_embeddings": 32}
BERT_CLASSES = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
                "BertForTokenClassification"]
ATOL = 1e-5


def randomise(model, seed: int = 0):
    """Every weight random, LayerNorms and biases too, so a mis-mapped tensor cannot hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.eval()


def write_bert_vocab(directory: Path, **tokenizer_config) -> None:
    (directory / "vocab.txt").write_text("".join(f"{t}\n" for t in VOCAB), encoding="utf-8")
    config = {"do_lower_case": True, "tokenizer_class": "BertTokenizer", **tokenizer_config}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def hf_bert_dir(root: Path, cls: str, seed: int = 0, **config) -> tuple[Path, torch.nn.Module]:
    """A transformers BERT of class ``cls`` with random weights, saved with a classic vocab.txt tokenizer."""
    extra = {"num_labels": 3, "id2label": {0: "neg", 1: "neu", 2: "pos"}, "label2id": {"neg": 0, "neu": 1, "pos": 2}} \
        if "Classification" in cls else {}
    hf_config = transformers.BertConfig(**{**BERT, **extra, **config})
    torch.manual_seed(seed)
    model = randomise(getattr(transformers, cls)(hf_config), seed)
    directory = root / f"hf-{cls}-{seed}"
    model.save_pretrained(directory)
    write_bert_vocab(directory)
    return directory, model


def batch(vocab: int = len(VOCAB), seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (3, 11), generator=gen)
    types = torch.randint(0, 2, (3, 11), generator=gen)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return ids, types, mask


def convert(src: Path, dst: Path, **flags) -> dict:
    return run(str(src), str(dst), ConvertConfig(**flags))


def ptm_outputs(module, cls: str, ids, types, mask) -> dict[str, torch.Tensor]:
    """What ptm's converted model computes for the outputs the transformers class returns."""
    with torch.no_grad():
        if cls.endswith("Classification"):
            return {"logits": module(ids, types, mask)}
        last, states = module.bert(ids, types, mask, output_hidden_states=True)
        out = {"hidden_states": states}
        if cls in ("BertModel", "BertForPreTraining"):
            out["pooler_output"] = module.bert.pool(last)
        if cls in ("BertForPreTraining", "BertForMaskedLM"):
            out["logits"] = module.mlm(last)
        if cls == "BertForPreTraining":
            out["nsp_logits"] = module.nsp(module.bert.pool(last))
    return out


def hf_outputs(model, cls: str, ids, types, mask) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        ref = model(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
        out = {"logits": getattr(ref, "logits", None), "hidden_states": getattr(ref, "hidden_states", None)}
        if cls == "BertModel":
            out["pooler_output"] = ref.pooler_output
        if cls == "BertForPreTraining":
            pooled = model.bert(input_ids=ids, token_type_ids=types, attention_mask=mask).pooler_output
            out.update(logits=ref.prediction_logits, nsp_logits=ref.seq_relationship_logits, pooler_output=pooled)
    return out


def max_error(mine: dict, theirs: dict) -> float:
    worst = 0.0
    for key, value in mine.items():
        pairs = zip(value, theirs[key], strict=True) if isinstance(value, tuple) else [(value, theirs[key])]
        for a, b in pairs:
            assert a.shape == b.shape, key
            worst = max(worst, float((a - b).abs().max()))
    return worst


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


@pytest.mark.parametrize("cls", BERT_CLASSES)
def test_bert_class_parity_and_round_trip(tmp_path, cls):
    src, hf_model = hf_bert_dir(tmp_path, cls)
    convert(src, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    module, _, initialised = load_model(tmp_path / "ckpt")
    ids, types, mask = batch()
    assert max_error(ptm_outputs(module, cls, ids, types, mask), hf_outputs(hf_model, cls, ids, types, mask)) < ATOL

    expected_objective = {"BertForPreTraining": "mlm+nsp", "BertForMaskedLM": "mlm"}.get(cls)
    assert config["objective"] == expected_objective
    if cls.endswith("Classification"):
        assert config["task"]["labels"] == ["neg", "neu", "pos"]
    if cls == "BertForMaskedLM":
        assert initialised == ["nsp", "pooler"]  # absent from the file, initialised by the loader
        with pytest.raises(PtmError, match="no nsp head .* that BertForPreTraining needs"):
            convert(tmp_path / "ckpt", tmp_path / "x", hf_class="BertForPreTraining")

    convert(tmp_path / "ckpt", tmp_path / "back")
    original, back = tensors(src), tensors(tmp_path / "back")
    assert sorted(original) == sorted(back)
    assert all(torch.equal(original[k], back[k]) for k in original)
    hf_config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert hf_config["architectures"] == [cls]
    reloaded = getattr(transformers, cls).from_pretrained(tmp_path / "back").eval()
    ref = hf_outputs(hf_model, cls, ids, types, mask)
    assert max_error({k: v for k, v in hf_outputs(reloaded, cls, ids, types, mask).items() if v is not None},
                     ref) == 0.0


def test_tokenizer_from_vocab_txt_tokenizes_as_transformers(tmp_path):
    src, _ = hf_bert_dir(tmp_path, "BertForMaskedLM")
    convert(src, tmp_path / "ckpt")
    theirs = transformers.AutoTokenizer.from_pretrained(src)
    ours = PtmTokenizer.load(tmp_path / "ckpt")
    assert ours.encode_batch(TEXTS) == [theirs(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert ours.mask_id == VOCAB.index("[MASK]") and ours.lowercase

    convert(tmp_path / "ckpt", tmp_path / "back")
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert [again(t)["input_ids"] for t in TEXTS] == [theirs(t)["input_ids"] for t in TEXTS]
    assert (tmp_path / "back" / "vocab.txt").read_text(encoding="utf-8").split() == VOCAB


def test_cased_vocab_and_tokenizer_json_are_kept(tmp_path):
    src, _ = hf_bert_dir(tmp_path, "BertModel")
    for name in ("vocab.txt", "tokenizer_config.json"):
        (src / name).unlink()
    write_bert_vocab(src, do_lower_case=False)
    transformers.AutoTokenizer.from_pretrained(src).save_pretrained(src)  # adds tokenizer.json
    assert (src / "tokenizer.json").is_file()
    theirs = transformers.AutoTokenizer.from_pretrained(src)
    convert(src, tmp_path / "ckpt")
    convert(tmp_path / "ckpt", tmp_path / "back")
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert [again(t)["input_ids"] for t in TEXTS] == [theirs(t)["input_ids"] for t in TEXTS]
    ours = PtmTokenizer.load(tmp_path / "ckpt")
    assert ours.encode_batch(TEXTS) == [theirs(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert ours.encode_batch(["The"]) == [[VOCAB.index("[UNK]")]]  # cased: "The" is not "the"


def ptm_native_checkpoint(directory: Path, objective: str = "mlm+nsp") -> Path:
    """A checkpoint written by ptm's own code, as `ptm pretrain` writes it."""
    from ptmcli.checkpoint import save_checkpoint, state_dict_for_saving
    from ptmcli.models.bert import BertConfig, BertForPreTraining
    from ptmcli.tokenization.tokenizer import TokenizerSettings
    from ptmcli.tokenization.train import wordpiece_from_vocab

    vocab_dir = directory / "vocab"
    vocab_dir.mkdir(parents=True)
    write_bert_vocab(vocab_dir)
    settings = TokenizerSettings(kind="wordpiece", lowercase=True, strip_accents=True, split_cjk=True,
                                 special_tokens={"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]",
                                                 "mask": "[MASK]"}, special_set="bert")
    tokenizer = wordpiece_from_vocab(str(vocab_dir / "vocab.txt"), settings)
    tokenizer.save(directory / "tok")
    model = randomise(BertForPreTraining(BertConfig(len(VOCAB), 16, 2, 2, 24, max_position_embeddings=32)), seed=3)
    model.tie_weights()
    config = {"arch": "bert", "model": model.config.to_dict(), "objective": objective, "task": None}
    return save_checkpoint(directory / "ckpt", config=config, weights=state_dict_for_saving(model, model.tied_weights()),
                           tokenizer_dir=directory / "tok")


def test_ptm_checkpoint_loads_in_transformers_with_same_outputs(tmp_path):
    ckpt = ptm_native_checkpoint(tmp_path)
    summary = convert(ckpt, tmp_path / "hf")
    assert summary["notes"] == []
    module, _, initialised = load_model(ckpt)
    assert initialised == []
    ids, types, mask = batch()
    with torch.no_grad():
        last = module.bert(ids, types, mask)
        pooled, mlm_logits = module.bert.pool(last), module.mlm(last)
        base = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
        ref = base(input_ids=ids, token_type_ids=types, attention_mask=mask)
        full = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "hf").eval()
        logits = full(input_ids=ids, token_type_ids=types, attention_mask=mask).prediction_logits
    assert float((last - ref.last_hidden_state).abs().max()) < ATOL
    assert float((pooled - ref.pooler_output).abs().max()) < ATOL
    assert float((mlm_logits - logits).abs().max()) < ATOL
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = PtmTokenizer.load(ckpt)
    assert [theirs(t, add_special_tokens=False)["input_ids"] for t in TEXTS] == ours.encode_batch(TEXTS)
    assert theirs(TEXTS[0])["input_ids"][0] == ours.cls_id


def test_mlm_checkpoint_leaves_out_untrained_heads_and_says_so(tmp_path, capsys):
    ckpt = ptm_native_checkpoint(tmp_path, objective="mlm")
    summary = convert(ckpt, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    assert any("left out nsp, pooler" in note for note in summary["notes"])
    assert "left out nsp, pooler" in capsys.readouterr().err
    assert not any(k.startswith(("cls.seq_relationship", "bert.pooler")) for k in tensors(tmp_path / "hf"))
    with pytest.raises(PtmError, match="needs a 'token-classification' task head; the checkpoint has no task head"):
        convert(ckpt, tmp_path / "x", hf_class="BertForTokenClassification")
    assert not (tmp_path / "x").exists()


def test_sharded_safetensors_and_legacy_bin(tmp_path):
    src, model = hf_bert_dir(tmp_path, "BertForPreTraining")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    write_bert_vocab(tmp_path / "sharded")
    convert(tmp_path / "sharded", tmp_path / "from-shards")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text((src / "config.json").read_text())
    write_bert_vocab(legacy)
    # Legacy files hold the tied decoder (and its bias) a second time, old position-id buffers,
    # and LayerNorm parameters named gamma/beta.
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in model.state_dict().items()}
    assert "bert.embeddings.LayerNorm.gamma" in state and "cls.predictions.decoder.weight" in state
    state["bert.embeddings.position_ids"] = torch.arange(32)[None]
    torch.save(state, legacy / "pytorch_model.bin")
    convert(legacy, tmp_path / "from-bin")
    reference, other = tensors(tmp_path / "from-shards"), tensors(tmp_path / "from-bin")
    assert sorted(other) == sorted(reference) and all(torch.equal(other[k], reference[k]) for k in reference)


def cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def test_bad_inputs_fail_with_one_line_and_leave_nothing(tmp_path, capsys):
    src, model = hf_bert_dir(tmp_path, "BertForMaskedLM")

    def fails(source: Path, pattern: str, *flags: str) -> None:
        dst = tmp_path / "out"
        assert cli("convert", str(source), str(dst), *flags) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ptm: error:") and "\n" not in err, err
        assert pattern in err, err
        assert not dst.exists() and not list(tmp_path.glob(".out*"))

    def variant(name: str, config=None, weights=None) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        values = json.loads((src / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps(config(values) if config else values))
        state = tensors(src)
        if weights:
            state = weights(state)
        save_file(state, str(directory / "model.safetensors"))
        write_bert_vocab(directory)
        return directory

    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "neither a ptm checkpoint nor a Hugging Face model directory")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"hidden": 3}')
    fails(tmp_path / "other", "neither a ptm checkpoint")
    fails(variant("ctrl", lambda c: {**c, "model_type": "ctrl", "architectures": ["CTRLLMHeadModel"]}),
          "unsupported architecture CTRLLMHeadModel; ptm converts BertModel, BertForPreTraining")
    fails(variant("qa", lambda c: {**c, "architectures": ["BertForQuestionAnswering"]}),
          "not part of a BertForQuestionAnswering")
    fails(variant("act", lambda c: {**c, "hidden_act": "relu"}), "hidden_act 'relu'")
    fails(variant("missing", weights=lambda s: {k: v for k, v in s.items() if "layer.1.output.dense.bias" not in k}),
          "missing tensor 'bert.encoder.layer.1.output.dense.bias'")
    fails(variant("extra", weights=lambda s: {**s, "cls.seq_relationship.weight": torch.zeros(2, 16),
                                                "cls.seq_relationship.bias": torch.zeros(2)}),
          "not part of a BertForMaskedLM, e.g. 'cls.seq_relationship.bias'")
    fails(variant("shape", lambda c: {**c, "intermediate_size": 20}), "has shape (24, 16), the config implies (20, 16)")
    untied = lambda s: {**s, "cls.predictions.decoder.weight": s["bert.embeddings.word_embeddings.weight"] + 1}  # noqa: E731
    fails(variant("untied", weights=untied), "differs from 'bert.embeddings.word_embeddings.weight'")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((src / "config.json").read_text())
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(3), "saved": datetime.date(2020, 1, 1)},
               pickled / "pytorch_model.bin")
    fails(pickled, "refused by torch.load(weights_only=True)")
    (pickled / "pytorch_model.bin").write_bytes(b"not a zip file at all")
    fails(pickled, "unreadable PyTorch weight file")
    (pickled / "pytorch_model.bin").unlink()
    fails(pickled, "no model weights")

    ckpt = tmp_path / "ckpt"
    convert(src, ckpt)
    capsys.readouterr()
    fails(ckpt, "already a ptm checkpoint", "--to", "ptm")
    fails(ckpt, "--binary applies to --to word2vec only", "--binary")
    state = tensors(ckpt)
    save_file({**state, "mlm.extra": torch.zeros(1)}, str(ckpt / "model.safetensors"))
    fails(ckpt, "1 unexpected tensor(s), e.g. 'mlm.extra'")
    save_file({k: v for k, v in state.items() if k != "mlm.norm.bias"}, str(ckpt / "model.safetensors"))
    fails(ckpt, "missing tensor(s), e.g. 'mlm.norm.bias'")
    save_file(state, str(ckpt / "model.safetensors"))
    assert cli("convert", str(ckpt), str(tmp_path / "out")) == 0
    assert cli("convert", str(ckpt), str(tmp_path / "out")) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert cli("convert", str(ckpt), str(tmp_path / "out"), "--overwrite") == 0


# -- GPT-2 --------------------------------------------------------------------------------------


def hf_gpt2_dir(root: Path) -> tuple[Path, torch.nn.Module]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 20 + ["the quick brown fox jumps over the lazy dog"] * 20, trainer)
    directory = root / "hf-gpt2"
    directory.mkdir()
    tokenizer.model.save(str(directory))  # vocab.json + merges.txt, as GPT-2 ships them
    vocab = tokenizer.get_vocab_size()
    config = transformers.GPT2Config(vocab_size=vocab, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = randomise(transformers.GPT2LMHeadModel(config))
    model.save_pretrained(directory)
    return directory, model


def test_gpt2_parity_round_trip_and_tokenizer(tmp_path):
    src, hf_model = hf_gpt2_dir(tmp_path)
    convert(src, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["objective"] == "clm"
    module, _, _ = load_model(tmp_path / "ckpt")
    ids, _, _ = batch(vocab=hf_model.config.vocab_size)
    with torch.no_grad():
        ref = hf_model(input_ids=ids, output_hidden_states=True)
        last, states = module.gpt(ids, output_hidden_states=True)
        logits = module.logits(last)
    assert float((logits - ref.logits).abs().max()) < ATOL
    for mine, theirs in zip(states[:-1], ref.hidden_states[:-1], strict=True):  # HF's last one is after ln_f
        assert float((mine - theirs).abs().max()) < ATOL

    theirs = transformers.GPT2Tokenizer(str(src / "vocab.json"), str(src / "merges.txt"))
    ours = PtmTokenizer.load(tmp_path / "ckpt")
    assert ours.encode_batch(TEXTS) == [theirs(t)["input_ids"] for t in TEXTS]

    convert(tmp_path / "ckpt", tmp_path / "back")
    original, back = tensors(src), tensors(tmp_path / "back")
    assert sorted(original) == sorted(back) and all(torch.equal(original[k], back[k]) for k in original)
    assert "lm_head.weight" not in back  # tied: stored once
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, ref.logits)
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert [again(t)["input_ids"] for t in TEXTS] == [theirs(t)["input_ids"] for t in TEXTS]


def test_a_converted_hf_bert_works_with_every_command(tmp_path, capsys, monkeypatch):
    """HF BertModel -> ptm: then continued pretraining, finetuning, features and evaluation all accept it."""
    monkeypatch.setenv("PTM_CACHE", str(tmp_path / "cache"))
    src, _model = hf_bert_dir(tmp_path, "BertModel")
    convert(src, tmp_path / "ptm")
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on a mat. Hello world!\n\nThe dog is running, it sat.\n" * 20, encoding="utf-8")
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"the cat sat\t{i % 2}\nhello world\t{(i + 1) % 2}\n" for i in range(10)), encoding="utf-8")

    assert cli("tokenize", "encode", str(text), "--tokenizer", str(tmp_path / "ptm"), "-o", str(tmp_path / "shards")) == 0
    assert cli("pretrain", "--init-from", str(tmp_path / "ptm"), "--data", str(tmp_path / "shards"), "-o", str(tmp_path / "pre"),
               "--seq-len", "24", "--batch-size", "2", "--max-steps", "2", "--eval-rows", "0", "--no-progress") == 0
    err = capsys.readouterr().err
    assert "mlm, nsp initialised at random" in err
    assert cli("finetune", "--checkpoint", str(tmp_path / "ptm"), "--task", "classification", "--train", str(data), "--dev", str(data),
               "-o", str(tmp_path / "ft"), "--max-steps", "2", "--max-len", "16", "--no-progress") == 0
    assert cli("extract-features", "-c", str(tmp_path / "ptm"), str(text), "-o", str(tmp_path / "f.npy"), "--pool", "mean") == 0
    assert cli("eval", "-c", str(tmp_path / "ft" / "best"), "--data", str(data)) == 0
