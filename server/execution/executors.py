"""Which ``ExecutionPool`` a server runs prompts on: ``--executor local`` (one worker process per
device) or ``--executor ray`` (actors on a Ray cluster, ``server.execution.ray_pool``)."""

from __future__ import annotations

from server.execution.local import local_pool
from server.execution.pool import ExecutionPool
from server.settings import ServerSettings


def execution_pool(settings: ServerSettings) -> ExecutionPool:
    """The pool ``settings.executor`` names. Raises ``ValueError`` (``RayUnavailable``) with the
    install command when the Ray executor is asked for and Ray is not installed."""
    if settings.executor == "ray":
        from server.execution.ray_pool import import_ray, ray_pool

        import_ray()
        return ray_pool(settings)
    return local_pool(settings)
