"""``--to onnx``: an encoder, language-model or task checkpoint as an ONNX graph.

The output directory holds ``model.onnx`` and the tokenizer files. Inputs are
``input_ids`` (int64 ``[batch, sequence]``) and, for BERT, ``attention_mask``
and ``token_type_ids`` of the same shape; both axes are dynamic. Outputs:

- BERT without a task: ``last_hidden_state`` ``[B, T, H]``, ``pooler_output``
  ``[B, H]`` when the checkpoint has a pooler, ``logits`` ``[B, T, vocab]`` when
  it has an MLM head;
- BERT with a task: ``logits`` (``[B, labels]`` or ``[B, T, labels]``);
- GPT: ``logits`` ``[B, T, vocab]`` and ``last_hidden_state``.

The graph is traced from ptm's own modules; when onnxruntime is installed the
export is run once against the torch outputs and the largest difference is
reported.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ptmcli.convert.sources import Model
from ptmcli.errors import PtmError
from ptmcli.textio.atomic import atomic_directory

OPSET = 17
FILE = "model.onnx"


class _EncoderOutputs(nn.Module):
    def __init__(self, module: nn.Module, family, pooled: bool, logits: bool):
        super().__init__()
        self.module, self.family, self.pooled, self.logits = module, family, pooled, logits

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.family.top(self.module, input_ids, token_type_ids, attention_mask)
        out = [hidden]
        if self.pooled:
            out.append(self.family.pool(self.module, hidden))
        if self.logits:
            out.append(self.module.mlm(hidden))
        return tuple(out)


class _EncoderTask(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.module(input_ids, token_type_ids, attention_mask)


class _GPTOutputs(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, input_ids):
        hidden = self.module.gpt(input_ids)
        return self.module.logits(hidden), hidden


def graph_for(model: Model) -> tuple[nn.Module, list[str], list[str]]:
    """(module to trace, input names, output names) for a checked model."""
    from ptmcli.convert.ptm_model import build_module
    from ptmcli.models.registry import get_family

    module, _ = build_module(model)
    family = get_family(model.spec.arch)
    if family.generates:
        return _GPTOutputs(module).eval(), ["input_ids"], ["logits", "last_hidden_state"]
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    if model.task is not None:
        return _EncoderTask(module).eval(), inputs, ["logits"]
    pooled, logits = "pooler" in model.parts, "mlm" in model.parts
    outputs = ["last_hidden_state"] + ["pooler_output"] * pooled + ["logits"] * logits
    return _EncoderOutputs(module, family, pooled, logits).eval(), inputs, outputs


def example_inputs(names: list[str], vocab_size: int, batch: int = 2, length: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs with one padded row, so the traced graph keeps the padding mask."""
    gen = torch.Generator().manual_seed(seed)
    values = {"input_ids": torch.randint(0, vocab_size, (batch, length), generator=gen)}
    if "attention_mask" in names:
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[-1, length // 2:] = 0
        values["attention_mask"] = mask
        values["token_type_ids"] = torch.zeros(batch, length, dtype=torch.long)
    return {name: values[name] for name in names}


def export_onnx(model: Model, target: str | Path, overwrite: bool) -> tuple[Path, list[str]]:
    """Write the ONNX directory; returns it and notes (the onnxruntime check)."""
    from ptmcli.convert.sources import check_exported_pool

    check_exported_pool(model, "ONNX")
    module, inputs, outputs = graph_for(model)
    example = example_inputs(inputs, model.model["vocab_size"])
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes.update({name: {0: "batch", 1: "sequence"} if name != "pooler_output" else {0: "batch"} for name in outputs})
    if model.task is not None and model.task["type"] == "classification":
        axes["logits"] = {0: "batch"}
    target = Path(target)
    notes = []
    with atomic_directory(target, overwrite=overwrite) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer warns about Python-side shape checks; the graph is checked below instead.
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(module, tuple(example.values()), str(tmp / FILE), input_names=inputs,
                                  output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
            except ModuleNotFoundError as err:
                raise PtmError(f"--to onnx needs the {err.name} package (pip install 'ptm[onnx]')") from None
        if model.tokenizer is not None:
            model.tokenizer.write_files(tmp)
        notes.append(check_with_onnxruntime(tmp / FILE, module, inputs, model.model["vocab_size"]))
    return target, notes


def check_with_onnxruntime(path: Path, module: nn.Module, inputs: list[str], vocab_size: int) -> str:
    """Run the graph on inputs of another shape than the traced ones and compare with torch."""
    try:
        import onnxruntime
    except ModuleNotFoundError:
        return "onnxruntime is not installed: the graph was not run (pip install 'ptm[onnx]')"
    example = example_inputs(inputs, vocab_size, batch=3, length=11, seed=1)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # The exporter drops inputs the model never reads (RoBERTa's and DistilBERT's segment ids).
    graph_inputs = {i.name for i in session.get_inputs()}
    got = session.run(None, {k: v.numpy() for k, v in example.items() if k in graph_inputs})
    with torch.no_grad():
        want = module(*example.values())
    want = want if isinstance(want, tuple) else (want,)
    worst = max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want))
    if worst > 1e-3:
        raise PtmError(f"the exported ONNX graph disagrees with ptm's model by {worst:.3g}; nothing was written")
    return f"onnxruntime check: largest difference from torch {worst:.2g}"
