"""Everything that crosses a worker's pipe, as frozen dataclasses (pickled by the connection).

Server → worker: the ``WorkerConfig`` once, then ``Run``, ``Cancel``, ``Interrupt``,
``SchemasRequest``, ``Free``, ``Stop``.
Worker → server: ``Ready`` once (or ``Failed`` when it cannot start), then ``WorkerEvent`` (or
``Events``, several in order) for every graph_runtime event, ``Done`` or ``Dropped`` for every
``Run`` (sent only once the files its nodes wrote are complete), ``Freed`` for every
``Free`` and whenever idling released cached outputs, and ``SchemasReply``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph_runtime.cache import CachePolicy, IdleKeep
from graph_runtime.events import Event
from graph_runtime.folders import FolderPaths
from server.execution.outcome import RunResult


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process is started with (the first message on its pipe)."""

    device: str
    folders: FolderPaths
    plugin_dirs: tuple[Path, ...] = ()
    # Node pack modules to load; None: every pack of the nodeloom.plugins entry-point group.
    builtin_plugins: tuple[str, ...] | None = None
    cache_entries: int = 256
    cache_policy: CachePolicy = "lru"
    cache_max_bytes: int = 128 << 20
    # What the output cache keeps once the worker is idle (graph_runtime.cache.IdleKeep).
    cache_when_idle: IdleKeep = "last-prompt"
    # CPU threads for torch's pools: the machine's cores shared among the workers, so that two
    # CPU workers do not each start a pool as large as the machine.
    threads: int | None = None
    # Threads encoding and writing output files while the run goes on (graph_runtime.deferred);
    # 0: nodes write in place.
    write_threads: int = 1
    # Model manager options (ram_budget, vram_budget, channels_last, compile), read by the nodes.
    model_settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One prompt to run. ``outputs_to_execute``: output node ids (empty: all). ``models``
    (``folder/name`` of the model files it picks) and ``long_running`` guide where it is placed."""

    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: tuple[str, ...] = ()
    models: frozenset[str] = frozenset()
    long_running: bool = False


@dataclass(frozen=True)
class NodeSchemas:
    """What a worker's registry declares: ``object_info`` (ComfyUI's /object_info), the model
    folder of every model-file input by node type, and the loaded plugins."""

    object_info: dict[str, dict[str, Any]]
    model_inputs: dict[str, dict[str, str]]
    plugins: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"object_info": self.object_info, "model_inputs": self.model_inputs, "plugins": list(self.plugins)}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> NodeSchemas:
        """Raises KeyError or TypeError for a body that is not ``as_dict()``'s shape."""
        if not isinstance(body["object_info"], dict) or not isinstance(body["model_inputs"], dict):
            raise TypeError("object_info and model_inputs must be objects")
        return cls(body["object_info"], body["model_inputs"], tuple(body.get("plugins", ())))


# -- server → worker ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """Queue ``job`` behind the worker's current one (the pool sends up to PREFETCH ahead)."""

    job: Job


@dataclass(frozen=True)
class Cancel:
    """Drop ``prompt_id`` if it has not started; interrupt it if it runs."""

    prompt_id: str


@dataclass(frozen=True)
class Interrupt:
    """Interrupt the running prompt when it is ``prompt_id`` (or whatever runs, for None)."""

    prompt_id: str | None


@dataclass(frozen=True)
class SchemasRequest:
    """Ask for fresh schemas (choice lists change as files appear); answered by a SchemasReply
    with the same ``request_id``, even while a prompt runs."""

    request_id: int


@dataclass(frozen=True)
class Free:
    """Clear the output cache and unload models: at once when idle, else after the prompts the
    worker already holds; answered by ``Freed``."""


@dataclass(frozen=True)
class Stop:
    """Finish the running prompt, then exit."""


ToWorker = Run | Cancel | Interrupt | SchemasRequest | Free | Stop


# -- worker → server ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Ready:
    """The worker loaded its registry and waits for jobs."""

    schemas: NodeSchemas


@dataclass(frozen=True)
class Failed:
    """The worker could not start; ``reason`` is the formatted traceback."""

    reason: str


@dataclass(frozen=True)
class WorkerEvent:
    """A graph_runtime event of the running prompt, unchanged (the server translates it)."""

    event: Event


@dataclass(frozen=True)
class Events:
    """Several graph_runtime events in the order they happened, sent at once (what queued up while
    the pipe was busy: one write and one wake-up of the server for all of them)."""

    events: tuple[Event, ...]


@dataclass(frozen=True)
class Done:
    """A ``Run`` finished. ``resources``: what the plugins' resources hold after it, by name
    (``{"model_manager": {...}, ...}``)."""

    prompt_id: str
    result: RunResult
    resources: dict[str, Any] | None = None
    # The output cache after it: policy, bounds, entries, nbytes, hits, misses, evictions.
    cache_stats: dict[str, Any] | None = None


@dataclass(frozen=True)
class Dropped:
    """A ``Run`` cancelled before it started."""

    prompt_id: str


@dataclass(frozen=True)
class Freed:
    """A ``Free`` was done, or the idle worker released cached outputs: what it holds now (as in
    ``Done``)."""

    resources: dict[str, Any] | None
    cache_stats: dict[str, Any] | None


@dataclass(frozen=True)
class SchemasReply:
    """The answer to the SchemasRequest of the same ``request_id``."""

    request_id: int
    schemas: NodeSchemas


FromWorker = Ready | Failed | WorkerEvent | Events | Done | Dropped | Freed | SchemasReply
