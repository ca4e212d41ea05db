"""What the CPU can run natively, detected from the hardware (never guessed from a model name)."""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

BF16_FLAGS: FrozenSet[str] = frozenset({"amx_bf16", "avx512_bf16"})
"""/proc/cpuinfo flags meaning native bf16 arithmetic (Intel AMX, AVX-512 BF16 on Intel / AMD)."""


ISA_KINDS: Tuple[str, ...] = ("amx", "avx512_bf16", "avx512_vnni", "avx512", "avx2", "baseline")
"""Capability classes of an x86 CPU for inference, best first (:func:`isa_kind`): ``amx`` (AMX tiles with bf16,
Intel Sapphire Rapids and later), ``avx512_bf16`` (AVX-512 BF16 dot products without AMX: Intel Cooper Lake,
AMD Zen 4 / 5, or an AMX CPU whose hypervisor hides AMX), ``avx512_vnni`` (AVX-512 int8 dot products, no bf16),
``avx512`` (AVX-512 F only), ``avx2`` (AVX2 + FMA), ``baseline`` (anything else, e.g. an ARM CPU)."""


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says about the first CPU: ``vendor`` (``vendor_id``: GenuineIntel, AuthenticAMD; ``""``
    when absent), ``model`` (``model name``) and ``flags`` (``flags``, or ``Features`` on ARM)."""

    vendor: str = ""
    model: str = ""
    flags: FrozenSet[str] = frozenset()


def parse_cpuinfo(text: str) -> CpuInfo:
    """:class:`CpuInfo` of the first processor block of a /proc/cpuinfo text (a pure function of the text)."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the end of the first processor block
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags", fields.get("Features", ""))
    return CpuInfo(fields.get("vendor_id", ""), fields.get("model name", ""), frozenset(flags.split()))


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """:func:`parse_cpuinfo` of ``path`` (an empty :class:`CpuInfo` where it does not exist: macOS / Windows)."""
    try:
        return parse_cpuinfo(path.read_text(errors="replace"))
    except OSError:
        return CpuInfo()


def cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> FrozenSet[str]:
    """The ``flags`` of the first CPU in ``path`` (empty where the file does not exist, e.g. macOS / Windows)."""
    return read_cpuinfo(path).flags


def isa_kind(flags: FrozenSet[str]) -> str:
    """The capability class (:data:`ISA_KINDS`) of a CPU with these /proc/cpuinfo ``flags``."""
    if {"amx_tile", "amx_bf16"} <= flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512f" in flags:
        return "avx512_vnni" if "avx512_vnni" in flags else "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "baseline"


def cpu_kind(info: CpuInfo) -> str:
    """The key the gate decision is stored under: ``VENDOR/ISA`` (e.g. ``AuthenticAMD/avx2``,
    ``GenuineIntel/avx512_bf16``), or ``unknown`` without any flags (no /proc/cpuinfo).

    The vendor is part of the key because the same ISA class runs OpenVINO's bf16 kernels at different
    speeds per vendor: with AVX-512 BF16 and no AMX, a bf16 encoder call took 177 ms against f32's 320 ms on the AMD EPYC the
    project measured first (docs/backends/README.md), and 870 ms against 537 ms on the Intel Xeon of issue 27.
    A key that is too fine only costs a fallback to fp32 (or a ``medsam-lite gate`` run); a key that is too
    coarse would run a slower precision."""
    if not info.flags:
        return "unknown"
    return f"{info.vendor or 'unknown'}/{isa_kind(info.flags)}"


@functools.lru_cache(maxsize=1)
def this_cpu_kind() -> str:
    """:func:`cpu_kind` of this machine's /proc/cpuinfo."""
    return cpu_kind(read_cpuinfo())


_CORE: List[Any] = []


def core() -> Any:
    """The process's one ``openvino.Core`` (created on first use; ImportError without OpenVINO). Every
    OpenVINO backend compiles through it, so the CPU plugin is loaded once and unloaded only at exit, never
    while another Core still runs models."""
    if not _CORE:
        import openvino as ov

        _CORE.append(ov.Core())
    return _CORE[0]


def openvino_capabilities() -> Optional[FrozenSet[str]]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU device (None where OpenVINO is not installed)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return None
    try:
        return frozenset(str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # a runtime without a CPU plugin
        return None


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively: OpenVINO's CPU capabilities list ``BF16``, or (without
    OpenVINO) /proc/cpuinfo has ``amx_bf16`` / ``avx512_bf16``."""
    caps = openvino_capabilities()
    if caps is not None:
        return "BF16" in caps
    return bool(cpuinfo_flags() & BF16_FLAGS)


def cpu_name() -> str:
    """Human-readable CPU model (OpenVINO's FULL_DEVICE_NAME, else /proc/cpuinfo's model name)."""
    try:
        return str(core().get_property("CPU", "FULL_DEVICE_NAME"))
    except Exception:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
