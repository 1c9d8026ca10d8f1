"""Running under ``torchrun``: the process group, which rank does what, and the data share.

ptm reads torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and
needs no flag of its own: ``torchrun --nproc-per-node N ptm pretrain ...``
trains with N processes. gloo runs on CPU, NCCL on CUDA (one GPU per local rank).

How the data is shared (``GlobalBatchShare``): every rank follows the same
seeded stream of examples and takes its own contiguous rows of each global
micro-batch. So a run is the same run whatever the world size: N processes
with batch b see exactly the examples of one process with batch N·b, losses
are normalised by the global count of predicted tokens, and a checkpoint
resumes at any world size. A task that can build part of a micro-batch
(``next_micro_batches(count, rows)``, as ptm's own tasks) builds only the
rank's rows: the ranks walk the cheap plan of the stream together, and each
reads, collates and masks its rows alone. Its loss normalisers are counted on
each rank's rows and summed across ranks, in the all-reduce by which the
ranks agree to go on at the start of each step. Any other task builds the whole
global micro-batch on every rank, which keeps its share.
"""

from __future__ import annotations

import datetime
import inspect

import torch

from ptmcli.errors import PtmError
from ptmcli.training.launch import SINGLE, Distributed, from_torchrun_env


def from_environment(device_spec: str = "auto") -> Distributed:
    """Join torchrun's process group when launched by it; a plain launch is one process."""
    dist_info = from_torchrun_env()
    if not dist_info.enabled:
        return SINGLE
    import torch.distributed as dist

    if not dist.is_initialized():
        use_cuda = device_spec != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(dist_info.local_rank)
        backend = "nccl" if use_cuda else "gloo"
        # A long evaluation or checkpoint on rank 0 must not time the others out.
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
    return dist_info


def device_for(dist_info: Distributed, device: torch.device) -> torch.device:
    """Each local rank drives its own GPU; CPU ranks share the host."""
    if dist_info.enabled and device.type == "cuda":
        return torch.device("cuda", dist_info.local_rank)
    return device


def wrap_ddp(model: torch.nn.Module, device: torch.device, find_unused: bool = False) -> torch.nn.Module:
    """DistributedDataParallel over ``model``; the caller keeps the bare model for saving.

    ``find_unused``: some parameters get no gradient in a step (BERT's NSP head
    under the MLM-only objective). Buffers are not broadcast: ptm's models have
    no running statistics, and every rank evaluates the same data.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    options = {"device_ids": [device.index] if device.type == "cuda" else None, "find_unused_parameters": find_unused}
    # Newer torch renamed the switch; syncing buffers once at start is harmless (they are equal).
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False
    else:
        options["broadcast_buffers"] = False
    return DistributedDataParallel(model, **options)


def shard_fsdp(model: torch.nn.Module, units: list[torch.nn.Module]) -> torch.nn.Module:
    """FSDP (``fully_shard``) each of ``units`` (the family's blocks), then the rest as one unit.

    Parameters become DTensors sharded across the ranks; the model object and
    its parameter names stay the same, so the optimizer and the checkpoint
    code see the usual names. Tied weights (embedding and output projection)
    both live in the root unit, where FSDP keeps them shared.
    """
    from torch.distributed.fsdp import fully_shard

    for module in units:
        fully_shard(module)
    fully_shard(model)
    return model


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) value gathered whole; a plain tensor as it is. Collective for DTensors."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def like_parameter(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``value`` (whole) laid out like ``param``: sharded the same way when ``param`` is a DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        return distribute_tensor(value.to(device=param.device, dtype=param.dtype), param.device_mesh, param.placements)
    return value.to(device=param.device, dtype=param.dtype).clone()


def gathered_state_dict(model: torch.nn.Module, tied: dict[str, str]) -> dict[str, torch.Tensor]:
    """Every rank takes part; the whole tensors (on CPU, tied aliases left out) come back on all."""
    state = {}
    for key, tensor in model.state_dict().items():
        whole = full_tensor(tensor.detach())
        if key not in tied:
            state[key] = whole.contiguous().cpu()
    return state


def average_gradients(model: torch.nn.Module, dist_info: Distributed, bucket_bytes: int = 64 << 20) -> None:
    """Average every trainable parameter's gradient across ranks, in a few flat buckets.

    The alternative to a DDP wrapper for models whose trainable set changes
    during training (gradual unfreezing) or that run extra paths outside
    ``forward`` (an auxiliary LM loss). A parameter without a gradient on this
    rank contributes zeros, so every rank reduces the same buffers.
    """
    if not dist_info.enabled:
        return
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    # Parameters no rank used this step keep no gradient, as in one process (AdamW then skips them).
    if not params:
        return
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(used)
    params = [p for p, count in zip(params, used.tolist()) if count > 0]
    for bucket in _buckets(params, bucket_bytes):
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in bucket])
        dist.all_reduce(flat)
        flat /= dist_info.world_size
        offset = 0
        for p in bucket:
            part = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = part.clone()
            else:
                p.grad.copy_(part)
            offset += p.numel()


def _buckets(params: list, bucket_bytes: int):
    bucket, size = [], 0
    for param in params:
        bucket.append(param)
        size += param.numel() * 4
        if size >= bucket_bytes:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket


def shutdown(dist_info: Distributed) -> None:
    if dist_info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_values(values: list[float], dist_info: Distributed, device: torch.device, op: str = "sum") -> list[float]:
    """A few floats summed (or their maximum) across ranks, in one collective; unchanged for one process."""
    if not dist_info.enabled:
        return values
    import torch.distributed as dist

    # NCCL reduces only CUDA tensors; gloo takes CPU ones. float64 keeps token counts exact.
    where = device if device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=where)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.tolist()


def barrier(dist_info: Distributed) -> None:
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()


def share_of(total: int, dist_info: Distributed) -> slice:
    """This rank's contiguous part of ``total`` rows; sizes differ by at most one."""
    base, extra = divmod(total, dist_info.world_size)
    start = dist_info.rank * base + min(dist_info.rank, extra)
    return slice(start, start + base + (1 if dist_info.rank < extra else 0))


def slice_batch(batch: dict, rows: slice, total: int) -> dict:
    """The rows of a collated batch: tensors (and lists) whose first dimension is the batch."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == total:
            out[key] = value[rows]
        elif isinstance(value, list) and len(value) == total:
            out[key] = value[rows]
        else:
            out[key] = value
    return out


def batch_rows(batch: dict) -> int:
    for key in ("input_ids", "labels"):
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("a batch with no tensors")


def builds_rows(task) -> bool:
    """Whether ``task`` can build part of a micro-batch: its own ``next_micro_batches`` takes ``rows``.

    Asked of the method itself, so a wrapper that changes batches (and passes
    other attributes through) is not bypassed.
    """
    return "rows" in inspect.signature(task.next_micro_batches).parameters


class MicroBatches(list):
    """A step's micro-batches for this rank, with the normalisers of the whole global step."""

    normalizers: dict[str, float]


class GlobalBatchShare:
    """A ``TrainTask`` seen by one rank: its rows of every global micro-batch.

    ``task`` must be built with the global micro-batch size (per-device batch
    x world size). Loss normalisers count the whole global step, so the
    per-rank losses add up to the one-process loss; the loop sums gradients
    across ranks. Evaluation, data state and everything else pass through:
    they are the same on every rank. ``next_micro_batches`` may run on the
    loop's batch thread; ``normalizers`` runs on the training thread, which
    sums ``shared_counts`` across ranks first (the loop does so in the
    all-reduce it makes anyway at the start of a step).
    """

    def __init__(self, task, dist_info: Distributed) -> None:
        self.task = task
        self.dist = dist_info
        self.in_part = builds_rows(task)
        if self.in_part:
            self.rows = share_of(self._checked_total(task.batch_size), dist_info)

    def _checked_total(self, total: int) -> int:
        if total < self.dist.world_size:
            raise PtmError(
                f"a global batch of {total} examples cannot be shared by {self.dist.world_size} processes "
                "(use fewer processes or a larger --batch-size)"
            )
        return total

    def next_micro_batches(self, count: int) -> MicroBatches:
        if self.in_part:
            return MicroBatches(self.task.next_micro_batches(count, rows=self.rows))
        batches = self.task.next_micro_batches(count)
        shares = MicroBatches()
        shares.normalizers = self.task.normalizers(batches)
        for batch in batches:
            total = self._checked_total(batch_rows(batch))
            shares.append(slice_batch(batch, share_of(total, self.dist), total))
        return shares

    def shared_counts(self, batches: MicroBatches) -> dict[str, float]:
        """This rank's part of the counts the loss normalisers need, to be summed across ranks ({} when none)."""
        return self.task.normalizer_counts(batches) if self.in_part else {}

    def normalizers(self, batches: MicroBatches, totals: dict[str, float] | None = None) -> dict[str, float]:
        """The step's normalisers; ``totals``: ``shared_counts`` summed across ranks (all-reduced here if not given)."""
        if self.in_part:
            if totals is None:
                counts = self.shared_counts(batches)
                totals = dict(zip(counts, all_reduce_values(list(counts.values()), self.dist, _collective_device())))
            norms = self.task.normalizers_from(totals, len(batches))
        else:
            norms = batches.normalizers
        # "ranks": for a loss a task can only average over this rank's rows (the auxiliary LM's).
        return dict(norms, ranks=float(self.dist.world_size))

    def __getattr__(self, name):
        # loss, summarize, tokens, evaluate, state_dict, after_evaluate, ...: the task's own.
        return getattr(self.task, name)


def _collective_device() -> torch.device:
    """Where NCCL needs a collective's tensors (the rank's GPU); gloo takes CPU tensors."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
