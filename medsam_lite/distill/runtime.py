"""Where a run executes: device, process group (torchrun), autocast settings.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`setup_runtime` calls
``torch.distributed.init_process_group`` from the environment variables with backend ``gloo`` on
CPU and ``nccl`` on CUDA; each process then uses ``cuda:LOCAL_RANK`` (CUDA) or the CPU. Only rank 0
writes files and shows progress bars.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist

from medsam_lite.errors import InputError

from .options import AMP_CHOICES, DEVICE_CHOICES


@dataclass
class Runtime:
    """Device, process group and precision of this process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp_dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def amp_name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the trained model (a no-op when amp is off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, values: Sequence[float]) -> List[float]:
        """Element-wise sum of ``values`` over all processes (float64)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.cpu().tolist()

    def to_device(self, tensor: torch.Tensor, image: bool = False) -> torch.Tensor:
        """Move a batch tensor; (B, C, H, W) images go channels_last when that is on."""
        tensor = tensor.to(self.device, non_blocking=True)
        if image and self.channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def close(self) -> None:
        """Destroy the process group if this runtime created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def setup_runtime(device: str = "auto", amp: str = "auto", channels_last: bool = True,
                  timeout_s: float = 24 * 3600.0) -> Runtime:
    """Pick the device, join the torchrun process group when ``WORLD_SIZE`` > 1, resolve amp.

    ``amp="auto"``: bf16 on CPU and on GPUs that support it, fp16 otherwise. ``fp16`` on CPU is
    refused (bf16 is the CPU autocast type). The long default ``timeout_s`` lets the other ranks wait
    at a barrier while rank 0 builds a teacher cache.
    """
    if device not in DEVICE_CHOICES:
        raise InputError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {device!r}")
    if amp not in AMP_CHOICES:
        raise InputError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA device is available")
    if use_cuda:
        index = local_rank % max(1, torch.cuda.device_count())
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device("cpu")

    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
        owns = True
    if dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()

    if amp == "off":
        amp_dtype = None
    elif amp == "bf16":
        amp_dtype = torch.bfloat16
    elif amp == "fp16":
        if not use_cuda:
            raise InputError("--amp fp16 needs CUDA; use bf16 (or auto) on CPU")
        amp_dtype = torch.float16
    else:  # auto
        amp_dtype = torch.bfloat16 if (not use_cuda or torch.cuda.is_bf16_supported()) else torch.float16
    return Runtime(device=dev, rank=rank, world_size=world, local_rank=local_rank, amp_dtype=amp_dtype,
                   channels_last=bool(channels_last), owns_group=owns)


@contextlib.contextmanager
def runtime_scope(device: str = "auto", amp: str = "auto", channels_last: bool = True) -> Iterator[Runtime]:
    """:func:`setup_runtime`, closing the process group it created on exit."""
    rt = setup_runtime(device, amp, channels_last)
    try:
        yield rt
    finally:
        rt.close()
