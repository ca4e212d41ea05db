"""What the CPU can run natively, detected from the hardware (never guessed from a model name)."""
from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any, FrozenSet, List, Optional

BF16_FLAGS: FrozenSet[str] = frozenset({"amx_bf16", "avx512_bf16"})
"""/proc/cpuinfo flags meaning native bf16 arithmetic (Intel AMX, AVX-512 BF16 on Intel / AMD)."""


def cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> FrozenSet[str]:
    """The ``flags`` of the first CPU in ``path`` (empty where the file does not exist, e.g. macOS / Windows)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


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
