"""Loaded models shared across nodes and runs, kept within a RAM and a VRAM budget.

Nodes never hold a module: they hold a :class:`ModelRef` (a key plus how to load it). The manager
loads each key once, hands the module out inside :meth:`ModelManager.use` (moved to the execution
device for the duration), and when a budget is exceeded it offloads least-recently-used modules from
the GPU to the CPU, then drops least-recently-used ones from RAM entirely; a dropped module is
loaded again from its file on its next use. Modules in use are never touched.

How a module is prepared (precision, memory format, compilation, frozen or trainable) is its
reference's :class:`LoadPolicy`; what a file is (family, configs) is remembered in a bounded
:attr:`ModelManager.descriptions` cache that :meth:`ModelManager.free` clears with the modules.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from nodes.infra.cache import BoundedCache

# A loader returns every module a file provides, by part name: loading a checkpoint once gives
# UNet, VAE and text encoders together.
GroupLoader = Callable[[], dict[str, torch.nn.Module]]


@dataclass(frozen=True)
class LoadPolicy:
    """How the manager prepares one module. ``None`` fields follow the manager's settings:
    ``dtype`` its compute dtype (fp16/bf16 on accelerators; modules stay fp32 on CPU),
    ``channels_last``/``compile`` its ``--channels-last``/``--compile`` options. ``trainable``
    keeps the module in train mode with gradients; otherwise it is frozen (eval, no grad)."""

    dtype: torch.dtype | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    trainable: bool = False


INFERENCE = LoadPolicy()


@dataclass(frozen=True)
class ModelRef:
    """A handle on one module: ``group`` identifies the file (path, mtime, size), ``part`` which
    module of it, ``policy`` how it is prepared (a trainable UNet is a module of its own, apart
    from the frozen one sampling uses). ``part_policies`` gives the policy of the parts loaded
    along with this one. Cheap to copy into node outputs and the executor's cache."""

    group: tuple[Any, ...]
    part: str
    loader: GroupLoader = field(compare=False, hash=False, repr=False)
    label: str = field(default="", compare=False)
    policy: LoadPolicy = INFERENCE
    part_policies: Mapping[str, LoadPolicy] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def key(self) -> tuple[Any, ...]:
        return (*self.group, self.part, self.policy)

    def sibling(self, part: str) -> ModelRef:
        """The reference to another part of the same file, with that part's default policy."""
        return replace(self, part=part, policy=self.part_policies.get(part, INFERENCE))

    def with_policy(self, **changes: Any) -> ModelRef:
        """E.g. ``ref.with_policy(trainable=True)`` for training."""
        return replace(self, policy=replace(self.policy, **changes))


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
        # What each file is (family, configs), kept while its modules may be evicted.
        self.descriptions = BoundedCache(DESCRIPTIONS_KEPT)
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
                part_ref = ref if part == ref.part else ref.sibling(part)
                if part_ref.key in self._entries:
                    continue  # already resident from an earlier load: keep that one
                module = self._prepare(module, part_ref.policy)
                self._entries[part_ref.key] = _Entry(part_ref, module, module_bytes(module))
            if ref.key not in self._entries:
                raise KeyError(f"loader for {ref.label or ref.group} gave no {ref.part!r} part")
            self._entries.move_to_end(ref.key)
            self._enforce_ram(protect={ref.key})
            return self._entries[ref.key].module

    def register(self, refs: list[ModelRef]) -> None:
        """Load every part of a group now (loader nodes report missing or broken files early)."""
        for ref in refs:
            self.ensure_loaded(ref)

    def load_dtype(self, policy: LoadPolicy) -> torch.dtype:
        """The dtype a module with ``policy`` is kept in: the policy's, else the compute dtype on
        an accelerator, fp32 on the CPU. Loaders read weights straight into it, so no module
        passes through a full copy in another precision."""
        if policy.dtype is not None:
            return policy.dtype
        return self.dtype if self.device.type != "cpu" else torch.float32

    def _prepare(self, module: torch.nn.Module, policy: LoadPolicy) -> torch.nn.Module:
        if policy.trainable:
            module.train().requires_grad_(True)
        else:
            module.eval().requires_grad_(False)
        dtype = policy.dtype if policy.dtype is not None else (self.dtype if self.device.type != "cpu" else None)
        if dtype is not None and any(p.dtype != dtype for p in module.parameters()):
            # torch's own cast: diffusers' ModelMixin.to() warns on every cast of a model that lists
            # fp32 modules, even an empty list (AutoencoderKL); the policy already chose the dtype.
            torch.nn.Module.to(module, dtype=dtype)
        if self.channels_last if policy.channels_last is None else policy.channels_last:
            module.to(memory_format=torch.channels_last)  # only 4-D weights change: no-op for text encoders
        if self.compile if policy.compile is None else policy.compile:
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
            if unload_models:
                self.descriptions.clear()
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
DESCRIPTIONS_KEPT = 64


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
