"""Dynamic int8 quantization of a checkpoint's ``nn.Linear`` layers, stored as plain safetensors.

The scheme is ``torch.ao.quantization.quantize_dynamic``'s: each weight is
quantized once, symmetric int8 (zero point 0), with one scale per tensor or per
output row, by the same observers; activations are quantized on the fly, per
batch, inside torch's dynamic int8 kernel. A quantized Linear ``P`` is stored
as

- ``P.weight_int8``  int8 ``[out, in]``
- ``P.weight_scale`` float32 ``[out]`` (per-channel) or ``[]`` (per-tensor)
- ``P.bias``         float32, unchanged, when the layer has one

and config.json records ``"quantization": {"method": "dynamic-int8", "scheme",
"modules"}``. Loading builds the fp32 model and swaps the listed Linears for
:class:`Int8Linear`, torch's dynamic quantized Linear whose state dict is those
plain tensors, so the ordinary strict loaders fill it like any other module.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from ptmcli.errors import PtmError

METHOD = "dynamic-int8"
SCHEMES = ("per-channel", "per-tensor")
INT8, SCALE = "weight_int8", "weight_scale"


def is_quantized(config: dict) -> bool:
    return bool(config.get("quantization"))


def refuse_training(config: dict, where: str) -> None:
    """One line for a command that would train an int8 checkpoint: its weights are not trainable."""
    if is_quantized(config):
        raise PtmError(f"{where}: an int8-quantized checkpoint (ptm compress --quantize) cannot be trained; "
                       "train the fp32 checkpoint it was made from (a frozen encoder, --mode features, is fine)")


@contextmanager
def _quiet():
    # torch 2.x warns that its quantized tensor constructors are deprecated (kept until torchao's int8
    # kernels replace them); the warning says nothing a person running ptm can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _observer(scheme: str):
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    return (per_channel_dynamic_qconfig if scheme == "per-channel" else default_dynamic_qconfig).weight()


def quantize_weight(weight: torch.Tensor, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scales) of a ``[out, in]`` weight, as quantize_dynamic computes them."""
    observer = _observer(scheme)
    weight = weight.detach().float()
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    with _quiet():
        if scheme == "per-channel":
            q = torch.quantize_per_channel(weight, scale.double(), zero_point.long(), 0, torch.qint8)
        else:
            q = torch.quantize_per_tensor(weight, float(scale), int(zero_point), torch.qint8)
    return q.int_repr(), scale.float().reshape(-1 if scheme == "per-channel" else ())


def _qweight(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    with _quiet():
        if scale.dim() == 0:
            return torch._make_per_tensor_quantized_tensor(values, float(scale), 0)
        zeros = torch.zeros(scale.shape, dtype=torch.long)
        return torch._make_per_channel_quantized_tensor(values, scale.double(), zeros, 0)


class Int8Linear(DynamicLinear):
    """torch's dynamic int8 Linear whose state dict is ``weight_int8``, ``weight_scale`` and ``bias``.

    torch keeps the packed weight in a child module whose state is an opaque object (pickled by
    ``torch.save``); here it is held off the module tree, so ``state_dict()`` yields plain
    tensors that safetensors writes and the strict loaders check by name and shape.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, scheme: str = "per-channel"):
        with _quiet():
            super().__init__(in_features, out_features, bias_=bias, dtype=torch.qint8)
        object.__setattr__(self, "_packed_params", self._modules.pop("_packed_params"))
        self.has_bias, self.scheme = bias, scheme
        scale = torch.ones(out_features) if scheme == "per-channel" else torch.tensor(1.0)
        self.set_int8(torch.zeros(out_features, in_features, dtype=torch.int8), scale,
                      torch.zeros(out_features) if bias else None)

    def set_int8(self, values: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.set_weight_bias(_qweight(values, scale), None if bias is None else bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise PtmError("an int8-quantized checkpoint runs on the CPU only (pass --device cpu)")
        return super().forward(x.float()).to(x.dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        weight, bias = self._weight_bias()
        scale = weight.q_per_channel_scales() if self.scheme == "per-channel" else torch.tensor(weight.q_scale())
        destination[prefix + INT8] = weight.int_repr()
        destination[prefix + SCALE] = scale.float()
        if bias is not None:
            destination[prefix + "bias"] = bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        names = [INT8, SCALE] + (["bias"] if self.has_bias else [])
        absent = [prefix + n for n in names if prefix + n not in state_dict]
        if absent:
            missing_keys.extend(absent)
            return
        self.set_int8(state_dict[prefix + INT8], state_dict[prefix + SCALE],
                      state_dict[prefix + "bias"] if self.has_bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: str) -> Int8Linear:
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, scheme)
        values, scale = quantize_weight(linear.weight, scheme)
        module.set_int8(values, scale, None if linear.bias is None else linear.bias.detach())
        return module

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}"


def saved_name(name: str) -> str:
    """A module's name as a checkpoint's keys spell it: a task model saves its ``lm.`` under the pretraining names."""
    return name[3:] if name.startswith("lm.") else name


def linear_names(model: nn.Module, tied: dict[str, str]) -> list[str]:
    """Saved names of the Linears worth quantizing: not those whose weight is tied to an embedding."""
    skip = set(tied) | set(tied.values())
    return [saved_name(name) for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and saved_name(name) + ".weight" not in skip]


def quantize_state(state: dict, names: list[str], scheme: str) -> dict:
    """``state`` (saved names) with each listed Linear's ``weight`` replaced by its int8 values and scales."""
    out = dict(state)
    for name in names:
        values, scale = quantize_weight(out.pop(name + ".weight"), scheme)
        out[f"{name}.{INT8}"], out[f"{name}.{SCALE}"] = values, scale
    return out


def apply_quantization(model: nn.Module, config: dict) -> nn.Module:
    """The loading hook: swap the Linears an int8 checkpoint's config lists for :class:`Int8Linear`
    shells, before the weights are loaded. A no-op for an fp32 checkpoint."""
    record = config.get("quantization")
    if not record:
        return model
    if record.get("method") != METHOD or record.get("scheme") not in SCHEMES:
        raise PtmError(f"config.json: unknown quantization {record.get('method')!r}/{record.get('scheme')!r} "
                       f"(this ptm reads {METHOD}, {' or '.join(SCHEMES)})")
    # A listed name the model lacks is a task head a pretraining model does not hold (the loaders skip its tensors).
    wanted = set(record.get("modules") or [])
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and saved_name(name) in wanted:
            parent, _, child = name.rpartition(".")
            shell = Int8Linear(module.in_features, module.out_features, module.bias is not None, record["scheme"])
            setattr(model.get_submodule(parent) if parent else model, child, shell)
    return model
