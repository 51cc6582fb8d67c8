"""The Ray ``ExecutionPool``: the local pool's workers as Ray actors, anywhere on a cluster.

Each worker is a ``WorkerActor`` (``server.execution.ray_actor``), running the same worker code
as a local process. The pool is ``LocalWorkerPool`` with its processes swapped for actors, so
placement (model affinity, long-running jobs), events, interrupts and the handling of a worker
that dies are the local pool's own. Ray places the actors (``num_gpus=1`` each on a cluster with
GPUs, CPU actors otherwise), schedules them and reports their death; the pool follows the
cluster: one actor per GPU (or per ``cpus_per_actor`` CPUs), more as nodes join, none restarted
for a node that left.

This is the only module that imports ray, and only when a pool starts; without it the pool
raises ``RayUnavailable`` saying how to install it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from server.execution.local import LocalWorkerPool, worker_config
from server.execution.messages import Failed, FromWorker, ToWorker, WorkerConfig
from server.execution.pool import PoolListener
from server.execution.process import WorkerHandle
from server.settings import ServerSettings

log = logging.getLogger(__name__)

INSTALL_HINT = "the Ray executor needs Ray: pip install 'nodeloom[ray]'"
# Seconds one poll of an actor waits for its worker to send something.
POLL_SECONDS = 1.0
# Seconds between two looks at the cluster's resources.
FOLLOW_SECONDS = 5.0
# Seconds a cluster's HOST:PORT has to accept a connection: ray.init retries an address nothing
# listens on for many minutes before it gives up.
REACH_SECONDS = 5.0
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>\[[^]]+\]|[^:/]+):(?P<port>\d+)$")
# Times in a row an actor may fail in its constructor, while no actor is ready, before the pool
# reports that its workers cannot start (a bad --out, a node pack that fails to import).
START_ATTEMPTS = 3


class RayUnavailable(ValueError):
    """Ray is not installed, or the cluster cannot be reached."""


def import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise RayUnavailable(INSTALL_HINT) from exc
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``), or
    start a local one when None; returns whether this call started Ray (and so should stop it).
    Raises ``RayUnavailable`` when Ray is missing or the cluster does not answer."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    check_address(address)
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError) as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc
    log.info("ray %s: %s", "started" if address is None else "joined", ray.cluster_resources())
    return True


def check_address(address: str | None) -> None:
    """Raise ``RayUnavailable`` at once for an ``--address`` Ray cannot take, or when nothing
    answers at its ``HOST:PORT``; ``auto``, ``local`` and other ``SCHEME://`` forms are Ray's to
    resolve (``ray://HOST`` takes Ray Client's port). The server checks before it starts, so the mistake is one line, not a failed start-up."""
    if address is None or address in ("auto", "local"):
        return
    match = _HOST_PORT.match(address.strip())
    if match is None:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", address):
            return
        raise RayUnavailable(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((match["host"].strip("[]"), int(match["port"])), timeout=REACH_SECONDS).close()
    except OSError as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc


@dataclass(frozen=True)
class ActorShape:
    """What each actor asks Ray for, and how many actors the cluster's resources make."""

    cpus: float = 1.0
    # Fixed number of actors; None: follow the cluster.
    workers: int | None = None

    def target(self, resources: dict[str, float]) -> tuple[int, bool]:
        """(actors wanted, on GPUs) for the cluster's total ``resources``."""
        gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 0)
        # At most one actor per CPU: each is a process holding its own models, and a fractional
        # --actor-cpus would otherwise start hundreds of them.
        count = gpus if gpus else int(min(cpus // max(self.cpus, 0.001), cpus))
        if self.workers is not None:
            count = self.workers
        return max(count, 1), bool(gpus)


class ActorLink:
    """The pool's end of one actor, standing in for a worker's process and pipe: ``send`` queues a
    message (a sender thread delivers them one at a time, in order), ``recv`` returns the next one
    from the worker (a ``Failed`` naming the reason once the actor died, then ``EOFError``)."""

    def __init__(self, ray: Any, actor: Any, name: str) -> None:
        self.ray, self.actor, self.name = ray, actor, name
        self.pid: int | None = None
        self.host: str | None = None
        # Whether the actor died in its constructor (it never became a worker).
        self.init_failed = False
        self._outgoing: queue.Queue[ToWorker | None] = queue.Queue()
        self._incoming: collections.deque[FromWorker] = collections.deque()
        self._closed = threading.Event()
        threading.Thread(target=self._deliver, daemon=True, name=f"{name}-send").start()

    def send(self, message: ToWorker) -> None:
        if self._closed.is_set():
            raise OSError(f"{self.name} is gone")
        self._outgoing.put(message)

    def _deliver(self) -> None:
        while (message := self._outgoing.get()) is not None:
            try:
                self.ray.get(self.actor.deliver.remote(message))
            except Exception:  # noqa: BLE001 - the actor died; recv() reports why
                self._closed.set()
                return

    def recv(self) -> FromWorker:
        while not self._incoming:
            if self._closed.is_set():
                raise EOFError
            try:
                if self.pid is None:
                    where = self.ray.get(self.actor.where.remote())
                    self.pid, self.host = where["pid"], where["host"]
                self._incoming.extend(self.ray.get(self.actor.poll.remote(POLL_SECONDS)))
            except Exception as exc:  # noqa: BLE001 - RayActorError and kin: the actor is gone
                self.close()
                if getattr(exc, "actor_init_failed", False):
                    # Ray's message is the constructor's whole traceback: its last line says why.
                    self.init_failed = True
                    return Failed(f"Ray actor {self.name} could not start: {_last_line(exc)}")
                return Failed(f"Ray actor {self.name}{f' on {self.host}' if self.host else ''} died: "
                              f"{_first_line(exc)}")
        return self._incoming.popleft()

    def wait(self, timeout: float | None = None) -> int | None:
        return None  # an actor has no exit code; its death is told by the Failed above

    def kill(self) -> None:
        self.close()
        try:
            self.ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def close(self) -> None:
        self._closed.set()
        self._outgoing.put(None)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


@dataclass(eq=False)
class ActorHandle(WorkerHandle):
    """A worker of the Ray pool; ``process`` and ``conn`` are both its ``ActorLink``."""

    # Actors started for this slot so far (names them: nodeloom-worker-INDEX.GENERATION).
    generation: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def describe(self) -> dict[str, Any]:
        link = self.process
        return {**super().describe(), "host": link.host if link is not None else None, "executor": "ray"}


class RayWorkerPool(LocalWorkerPool):
    """``ExecutionPool`` over Ray actors. ``make_config(device)`` configures each worker (device
    ``cpu`` or ``cuda:0``); ``publish_to`` gives batch workers a shared output folder; ``address``
    as for ``connect``. Actors joining or leaving: checked every ``follow_seconds``."""

    def __init__(self, make_config: Any, *, address: str | None = None, shape: ActorShape = ActorShape(),
                 publish_to: str | None = None, follow_seconds: float = FOLLOW_SECONDS) -> None:
        super().__init__(["ray"], make_config)
        self.workers = []
        self.address, self.shape, self.publish_to = address, shape, publish_to
        self.follow_seconds = follow_seconds
        self.target = 0
        self.on_gpus = False
        self._ray: Any = None
        self._actor_class: Any = None
        self._started_ray = False
        self._follower: asyncio.Task[None] | None = None
        # Why no actor can start, once they have failed START_ATTEMPTS times in a row; None
        # while they can (the batch driver stops on it instead of waiting forever).
        self.start_failure: str | None = None

    async def start(self, listener: PoolListener) -> None:
        loop = asyncio.get_running_loop()
        self._started_ray = await loop.run_in_executor(None, connect, self.address)
        _reclaim_sigterm()
        self._ray = import_ray()
        from server.execution.ray_actor import WorkerActor

        self._actor_class = self._ray.remote(WorkerActor)
        self.target, self.on_gpus = self.shape.target(await loop.run_in_executor(None, self._ray.cluster_resources))
        device = "ray:cuda" if self.on_gpus else "ray:cpu"
        self.workers = [ActorHandle(index=i, device=device) for i in range(self.target)]
        await super().start(listener)
        self._follower = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        self._closing = True
        if self._follower is not None:
            self._follower.cancel()
        for worker in self.workers:
            worker.state = "stopped"
            if worker.process is not None:
                worker.process.kill()
        if self._started_ray:
            await asyncio.get_running_loop().run_in_executor(None, self._ray.shutdown)

    def _spawn(self, worker: WorkerHandle) -> None:
        assert isinstance(worker, ActorHandle)
        worker.generation += 1
        config: WorkerConfig = self._make_config("cuda:0" if self.on_gpus else "cpu")
        name = f"nodeloom-worker-{worker.index}.{worker.generation}"
        actor = self._actor_class.options(
            num_cpus=self.shape.cpus, num_gpus=1 if self.on_gpus else 0, max_concurrency=4, name=name,
            runtime_env={"env_vars": _env(config, local=self._started_ray)}).remote(config, self.publish_to)
        link = ActorLink(self._ray, actor, name)
        worker.process, worker.conn, worker.state = link, link, "starting"  # type: ignore[assignment]
        worker.inflight, worker.long, worker.running, worker.node, worker.models = [], set(), None, None, {}
        worker.resources = worker.cache_stats = None
        worker.started_at = time.monotonic()
        threading.Thread(target=self._read, args=(worker, link, link), daemon=True,
                         name=f"actor-reader-{worker.index}").start()

    def _on_exit(self, worker: WorkerHandle, process: Any, exitcode: int | None, failure: str) -> None:
        current = worker.process is process and worker.state != "stopped"
        super()._on_exit(worker, process, exitcode, failure)
        if (current and isinstance(process, ActorLink) and process.init_failed
                and worker.failures_in_a_row >= START_ATTEMPTS and not any(w.state == "ready" for w in self.workers)):
            self.start_failure = f"no Ray actor could start ({worker.failures_in_a_row} attempts): {failure}"

    def _respawn(self, worker: WorkerHandle, process: Any) -> None:
        if worker.process is process and not self._closing and self._live() >= self.target:
            worker.state = "retired"  # the cluster shrank: its slot waits for resources to return
            return
        super()._respawn(worker, process)

    def _live(self) -> int:
        return sum(w.state in ("starting", "ready") for w in self.workers)

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(self.follow_seconds)
            try:
                resources = await loop.run_in_executor(None, self._ray.cluster_resources)
            except Exception:  # noqa: BLE001 - the cluster is briefly unreachable: look again later
                log.warning("cannot read the Ray cluster's resources", exc_info=True)
                continue
            self.resize(self.shape.target(resources)[0])

    def resize(self, target: int) -> None:
        """Start actors up to ``target`` (reusing retired slots first), or stop surplus actors
        that are still waiting for resources (a busy actor is never stopped for this)."""
        self.target = target
        while self._live() < target:
            worker = next((w for w in self.workers if w.state in ("retired", "dead")), None)
            if worker is None:
                worker = ActorHandle(index=len(self.workers), device=self.workers[0].device if self.workers
                                     else "ray:cpu")
                self.workers.append(worker)
            log.info("ray: starting worker %d (cluster wants %d)", worker.index, target)
            self._spawn(worker)
        surplus = [w for w in self.workers if w.state == "starting" and not w.inflight]
        for worker in surplus[:max(self._live() - target, 0)]:
            log.info("ray: stopping worker %d, waiting for resources the cluster no longer has", worker.index)
            worker.process.kill()

    def stats(self) -> list[dict[str, Any]]:
        return [w.describe() for w in self.workers if w.state != "retired"]


def _reclaim_sigterm() -> None:
    """Hand SIGTERM back to the handler Python had (uvicorn's graceful shutdown): Ray's core worker,
    once connected, puts its own fatal-signal handler there at the C level, which kills the
    server with a stack dump, its queue and actors never stopped. Only the main thread may."""
    handler = signal.getsignal(signal.SIGTERM)  # None: not set from Python, nothing to give back
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _env(config: WorkerConfig, *, local: bool) -> dict[str, str]:
    """Environment of an actor's process: torch's pools sized to its CPUs and two malloc arenas,
    as a local worker's; on a Ray this pool started itself, the project importable from wherever
    the driver runs it (a cluster's nodes have nodeloom installed)."""
    threads = str(config.threads or 1)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "MALLOC_ARENA_MAX": "2"}
    if local:
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return env


def ray_pool(settings: ServerSettings) -> RayWorkerPool:
    """The server's pool with ``--executor ray``: actors configured as the local workers are."""
    shape = ActorShape(cpus=settings.ray_actor_cpus, workers=settings.ray_workers)

    def make_config(device: str) -> WorkerConfig:
        return replace(worker_config(settings, device), threads=max(int(shape.cpus), 1))

    return RayWorkerPool(make_config, address=settings.ray_address, shape=shape)
