"""Loaded models shared across nodes and runs, kept within a RAM and a VRAM budget.

Nodes never hold a module: they hold a :class:`ModelRef` (a key plus how to load it). The manager
loads each key once, hands the module out inside :meth:`ModelManager.use` (moved to the execution
device for the duration), and when a budget is exceeded it offloads least-recently-used modules from
the GPU to the CPU, then drops least-recently-used ones from RAM entirely; a dropped module is
loaded again from its file on its next use. Modules in use are never touched.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

# A loader returns every module a file provides, by part name: loading a checkpoint once gives
# UNet, VAE and text encoders together.
GroupLoader = Callable[[], dict[str, torch.nn.Module]]


@dataclass(frozen=True)
class ModelRef:
    """A handle on one module: ``group`` identifies the file (path, mtime, size), ``part`` which
    module of it. Cheap to copy into node outputs and the executor's cache."""

    group: tuple[Any, ...]
    part: str
    loader: GroupLoader = field(compare=False, hash=False, repr=False)
    label: str = field(default="", compare=False)

    @property
    def key(self) -> tuple[Any, ...]:
        return (*self.group, self.part)


@dataclass
class _Entry:
    ref: ModelRef
    module: torch.nn.Module
    nbytes: int
    in_use: int = 0
    loads: int = 1
    last_used: float = field(default_factory=time.monotonic)


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16/bf16 on accelerators (bf16 where supported: no fp16 overflow), fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


class ModelManager:
    """One per process (kept in ``ctx.services``). Thread-safe for the bookkeeping; the runtime
    runs one workflow at a time per process."""

    def __init__(self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 ram_budget: int | None = None, vram_budget: int | None = None,
                 channels_last: bool = False, compile: bool = False) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.ram_budget = ram_budget
        self.vram_budget = vram_budget
        self.channels_last = channels_last
        self.compile = compile
        self._entries: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self.evictions = 0
        self.offloads = 0

    # -- loading ---------------------------------------------------------------------------------

    def ensure_loaded(self, ref: ModelRef) -> torch.nn.Module:
        """The module for ``ref``, loading its file if it is not resident."""
        with self._lock:
            entry = self._entries.get(ref.key)
            if entry is not None:
                self._entries.move_to_end(ref.key)
                return entry.module
            loaded = ref.loader()
            for part, module in loaded.items():
                key = (*ref.group, part)
                if key in self._entries:
                    continue  # already resident from an earlier load: keep that one
                module = self._prepare(part, module)
                self._entries[key] = _Entry(ModelRef(ref.group, part, ref.loader, ref.label), module,
                                            module_bytes(module))
            if ref.key not in self._entries:
                raise KeyError(f"loader for {ref.label or ref.group} gave no {ref.part!r} part")
            self._entries.move_to_end(ref.key)
            self._enforce_ram(protect={ref.key})
            return self._entries[ref.key].module

    def register(self, refs: list[ModelRef]) -> None:
        """Load every part of a group now (loader nodes report missing or broken files early)."""
        for ref in refs:
            self.ensure_loaded(ref)

    def _prepare(self, part: str, module: torch.nn.Module) -> torch.nn.Module:
        module.eval().requires_grad_(False)
        if self.device.type != "cpu" and part != "vae":
            module.to(dtype=self.dtype)  # the VAE stays fp32: SD/SDXL VAEs overflow in fp16
        if self.channels_last and part in ("unet", "vae"):
            module.to(memory_format=torch.channels_last)
        if self.compile and part == "unet":
            module.compile()  # in place and lazy: the first sampling step pays for compilation
        return module

    # -- use ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def use(self, *refs: ModelRef) -> Iterator[list[torch.nn.Module]]:
        """The modules for ``refs`` on the execution device, protected from eviction meanwhile."""
        modules = [self.ensure_loaded(ref) for ref in refs]
        with self._lock:
            entries = [self._entries[ref.key] for ref in refs]
            for entry in entries:
                entry.in_use += 1
                entry.last_used = time.monotonic()
                self._entries.move_to_end(entry.ref.key)
            if self.device.type != "cpu":
                needed = sum(e.nbytes for e in entries if _device_of(e.module) != self.device)
                self._enforce_vram(extra=needed)
                for entry in entries:
                    entry.module.to(self.device)
        try:
            yield modules
        finally:
            with self._lock:
                for entry in entries:
                    entry.in_use -= 1
                self._enforce_ram(protect=set())

    def _enforce_vram(self, *, extra: int) -> None:
        if self.vram_budget is None:
            return
        for key, entry in list(self._entries.items()):  # oldest first
            if self._vram_used() + extra <= self.vram_budget:
                return
            if entry.in_use == 0 and _device_of(entry.module) == self.device:
                entry.module.to("cpu")
                self.offloads += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _enforce_ram(self, *, protect: set[tuple[Any, ...]]) -> None:
        if self.ram_budget is None:
            return
        for key, entry in list(self._entries.items()):  # oldest first
            if self._ram_used() <= self.ram_budget:
                break
            if entry.in_use == 0 and key not in protect:
                del self._entries[key]
                self.evictions += 1
        gc.collect()

    def _ram_used(self) -> int:
        return sum(e.nbytes for e in self._entries.values() if _device_of(e.module).type == "cpu")

    def _vram_used(self) -> int:
        return sum(e.nbytes for e in self._entries.values() if _device_of(e.module).type != "cpu")

    # -- reporting and freeing (for /system_stats and POST /free) ----------------------------------

    def loaded(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"name": e.ref.label or str(e.ref.group[0]), "part": e.ref.part, "bytes": e.nbytes,
                     "device": str(_device_of(e.module)), "in_use": e.in_use > 0}
                    for e in self._entries.values()]

    def stats(self) -> dict[str, Any]:
        return {"device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "ram_used": self._ram_used(), "vram_used": self._vram_used(), "ram_budget": self.ram_budget,
                "vram_budget": self.vram_budget, "evictions": self.evictions, "offloads": self.offloads,
                "models": self.loaded()}

    def free(self, *, unload_models: bool = True) -> int:
        """Drop every model not in use (``unload_models``) or just move them off the GPU."""
        with self._lock:
            count = 0
            for key, entry in list(self._entries.items()):
                if entry.in_use:
                    continue
                if unload_models:
                    del self._entries[key]
                elif _device_of(entry.module).type != "cpu":
                    entry.module.to("cpu")
                else:
                    continue
                count += 1
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return count

    def __contains__(self, ref: ModelRef) -> bool:
        return ref.key in self._entries


def _device_of(module: torch.nn.Module) -> torch.device:
    for param in module.parameters():
        return param.device
    return torch.device("cpu")


SERVICE_NAME = "model_manager"


def manager_from(services: Any) -> ModelManager:
    """The process's manager, created on first use from the runtime's settings when present."""
    def create() -> ModelManager:
        settings = services.get("settings") or {}
        get = settings.get if isinstance(settings, dict) else (lambda k, d=None: getattr(settings, k, d))
        return ModelManager(device=get("device", None), ram_budget=_bytes(get("ram_budget", None)),
                            vram_budget=_bytes(get("vram_budget", None)),
                            channels_last=bool(get("channels_last", False)), compile=bool(get("compile", False)))
    return services.get_or_create(SERVICE_NAME, create)


def _bytes(value: Any) -> int | None:
    """Budgets as bytes, or strings like "6GB", "512MiB"."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip().upper().replace("IB", "B")
    for suffix, factor in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))
