"""Everything a server instance is configured with, in one dataclass shared by every router."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from graph_runtime.cache import IDLE_KEEP, CachePolicy, IdleKeep
from graph_runtime.folders import FolderPaths

LOOPBACK_HOSTS: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_ENV = "NODELOOM_TOKEN"
# Images with more pixels are refused from their header, before decoding (decompression bombs):
# the lower of an 8192x8192 image and Pillow's own limit.
DEFAULT_MAX_IMAGE_PIXELS = min(8192 * 8192, Image.MAX_IMAGE_PIXELS or 8192 * 8192)
# The key under which nodes find it in ``ctx.services.get("settings")`` (LoadImage in the workers).
MAX_IMAGE_PIXELS_KEY = "max_image_pixels"


@dataclass
class ServerSettings:
    """Configuration of one ``nodeloom serve`` process.

    ``folders`` holds the models roots and the input/output/temp/user folders; ``user_dir`` is
    where the frontend keeps settings and workflows, ``db_path`` the SQLite queue and history.
    """

    host: str = "127.0.0.1"
    port: int = 8188
    # Required when ``host`` is not loopback: every request must then carry it.
    token: str | None = None
    folders: FolderPaths = field(default_factory=lambda: FolderPaths(base=Path.cwd()))
    user_dir: Path | None = None
    db_path: Path | None = None
    # One worker process per entry: "cpu", "cuda:0", "cuda:1", …
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    plugin_dirs: list[Path] = field(default_factory=list)
    # Node pack modules the workers load; None: every pack of the nodeloom.plugins entry-point
    # group (tests narrow this to stay torch-free).
    builtin_plugins: tuple[str, ...] | None = None
    max_upload_bytes: int = 100 * 1024 * 1024
    # Every image decoded (uploads, previews, LoadImage in the workers) is refused above this.
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    # Request bodies of POST /prompt, of /userdata/… files, and of every other route (settings,
    # queue commands); refused with 413 as soon as they pass the limit, chunked or not.
    max_prompt_bytes: int = 16 << 20
    max_userdata_bytes: int = 10 << 20
    max_body_bytes: int = 1 << 20
    # Longest STRING value (characters) and identifier (class_type, node id, input name) a
    # submitted prompt may carry.
    max_string_chars: int = 256 << 10
    max_identifier_chars: int = 256
    # Most nodes one submitted prompt may have (each node's events cost time while it runs).
    max_nodes: int = 10_000
    # A static frontend build to serve at "/"; None serves the installed comfyui-frontend-package.
    frontend_root: Path | None = None
    # The editor's template gallery (index.json, <name>.json, thumbnails; see server.templates);
    # None: the project's own, workflows/templates/.
    templates_dir: Path | None = None
    # Origins allowed by CORS (empty: CORS off) and, besides the server's own, by the origin check.
    allow_origins: list[str] = field(default_factory=list)
    # Per websocket client: messages buffered before a client too slow to read them is dropped.
    client_send_queue: int = 1024
    # Settings every worker's nodes get (the model manager's ram_budget, vram_budget, …; and
    # max_image_pixels, added from the field above).
    model_settings: dict[str, Any] = field(default_factory=dict)
    # Outputs cached per worker (graph_runtime OutputCache entries).
    cache_entries: int = 256
    cache_policy: CachePolicy = "lru"
    # Estimated bytes of cached outputs per worker (models are not counted: they have budgets).
    cache_max_bytes: int = 128 << 20
    # What each worker's cache keeps once the worker is idle: "last-prompt" (a re-run of the last
    # prompt, changed or not, finds what it needs; older outputs are released) or "all".
    cache_when_idle: IdleKeep = "last-prompt"
    # How many times a prompt interrupted by a server restart is run again before it fails.
    max_attempts: int = 2
    # Seconds a completion webhook (extra_data.webhook_url) may take to answer.
    webhook_timeout: float = 10.0
    # Seconds a worker has to start and report its node schemas.
    worker_start_timeout: float = 120.0
    # Where prompts run: "local" (one worker process per device) or "ray" (actors on a Ray
    # cluster: ``ray_address`` to join, None to start a local one; ``ray_workers`` actors, None to
    # follow the cluster's GPUs or CPUs; ``ray_actor_cpus`` CPUs each).
    executor: str = "local"
    ray_address: str | None = None
    ray_workers: int | None = None
    ray_actor_cpus: float = 1.0

    def __post_init__(self) -> None:
        self.folders.user_dir = Path(self.user_dir or self.folders.user_dir or self.folders.base / "user")
        self.user_dir = self.folders.user_dir
        self.db_path = Path(self.db_path or self.user_dir / "nodeloom.sqlite3")
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        assert self.devices, "at least one device is needed (e.g. ['cpu'])"
        assert self.max_upload_bytes > 0, "max_upload_bytes must be positive"
        assert self.max_image_pixels > 0, "max_image_pixels must be positive"
        self.model_settings = {**self.model_settings, MAX_IMAGE_PIXELS_KEY: self.max_image_pixels}
        assert min(self.max_prompt_bytes, self.max_userdata_bytes, self.max_body_bytes) > 0, \
            "body limits must be positive"
        assert min(self.max_string_chars, self.max_identifier_chars, self.max_nodes) > 0, \
            "input limits must be positive"
        assert self.cache_policy in ("lru", "none"), "cache_policy must be 'lru' or 'none'"
        assert self.cache_entries > 0 and self.cache_max_bytes > 0, "cache bounds must be positive"
        assert self.cache_when_idle in IDLE_KEEP, f"cache_when_idle must be one of {IDLE_KEEP}"
        assert self.webhook_timeout > 0, "webhook_timeout must be positive"
        assert self.client_send_queue > 0, "client_send_queue must be positive"
        assert self.executor in ("local", "ray"), f"unknown executor {self.executor!r}; expected local or ray"
        assert self.ray_workers is None or self.ray_workers > 0, "--workers must be positive"
        assert self.ray_actor_cpus > 0, "--actor-cpus must be positive"

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    def check_exposure(self) -> None:
        """Refuse to listen beyond this machine without a token."""
        if not self.is_loopback and not self.token:
            raise ValueError(f"binding {self.host!r} exposes the server beyond this machine: "
                             f"pass --token or set {TOKEN_ENV}")
