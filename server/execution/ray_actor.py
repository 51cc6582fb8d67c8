"""What runs inside a Ray actor: the local worker process's own ``_Worker`` (registry, plugins,
model manager, output cache, the typed messages of ``server.execution.messages``), fed through two
in-process queues instead of a pipe.

The pool (``server.execution.ray_pool``) turns this class into a threaded Ray actor: ``deliver``
puts a server→worker message where the worker's control thread reads it, and ``poll`` hands back
what the worker sent, a batch at a time. A whole prompt runs inside the actor; only messages
(jobs, events, previews, outcomes) cross. This module does not import ray.
"""

from __future__ import annotations

import atexit
import os
import queue
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from server.execution.messages import Done, FromWorker, ToWorker, WorkerConfig
from server.execution.publish import Publisher

# Most messages one poll returns (events of a fast prompt arrive in bursts).
POLL_BATCH = 256


class _Mailbox:
    """The worker's end of its link: ``recv`` blocks for the next delivered message; ``send``
    queues a message for the pool, publishing a finished run's output files first."""

    def __init__(self, publisher: Publisher | None) -> None:
        self.inbox: queue.Queue[ToWorker] = queue.Queue()
        self.outbox: queue.Queue[FromWorker] = queue.Queue()
        self.publisher = publisher

    def recv(self) -> ToWorker:
        return self.inbox.get()

    def send(self, message: FromWorker) -> None:
        if self.publisher is not None and isinstance(message, Done):
            message = Done(message.prompt_id, self.publisher.publish(message.result), message.resources,
                           message.cache_stats)
        self.outbox.put(message)


class WorkerActor:
    """One worker as a Ray actor. ``config.device`` is ``cpu`` or ``cuda:0`` (Ray has already
    limited the actor to its own GPU). ``publish_to``: a batch's shared output folder (a path or an
    fsspec URL); the worker then saves into a staging folder of its own and publishes each run's
    outputs there (see ``server.execution.publish``). Raises what building the worker raises (a
    plugin that cannot load): Ray then reports the actor dead with that error."""

    def __init__(self, config: WorkerConfig, publish_to: str | None = None) -> None:
        if config.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported by the node packs
        publisher = None
        if publish_to is not None:
            staging = Path(tempfile.mkdtemp(prefix="nodeloom-actor-"))
            # Published files leave staging at once; what stays (folders, temp previews) goes with the actor.
            atexit.register(shutil.rmtree, staging, True)
            config.folders.output_dir = staging / "output"
            config.folders.temp_dir = staging / "temp"
            publisher = Publisher(config.folders.output_dir, publish_to)
        self.mailbox = _Mailbox(publisher)
        from server.execution.worker import _Worker  # the very class the local worker process runs

        self.worker = _Worker(config, self.mailbox)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.worker.run_forever, name="nodeloom-worker", daemon=True)
        self.thread.start()

    def deliver(self, message: ToWorker) -> None:
        self.mailbox.inbox.put(message)

    def poll(self, timeout: float) -> list[FromWorker]:
        """What the worker sent since the last poll: waits up to ``timeout`` s for the first."""
        try:
            batch = [self.mailbox.outbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(batch) < POLL_BATCH:
            try:
                batch.append(self.mailbox.outbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def where(self) -> dict[str, Any]:
        """The actor's process id, host and GPUs, for /system_stats and error messages."""
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
