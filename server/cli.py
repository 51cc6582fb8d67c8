"""``nodeloom serve``: parse options, build the settings, run uvicorn (websockets implementation)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from typing import Any

from graph_runtime.cache import IDLE_KEEP
from graph_runtime.folders import FolderPaths
from graph_runtime.headless import plugin_dirs_of
from server.settings import DEFAULT_MAX_IMAGE_PIXELS, TOKEN_ENV, ServerSettings

DESCRIPTION = __doc__


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``nodeloom serve`` itself (the plugins add theirs through parents)."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; anything else needs --token)")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"access token every request must carry (or set {TOKEN_ENV})")
    parser.add_argument("--devices", default="cpu",
                        help="comma-separated devices, one worker process each: cpu or cuda:0,cuda:1")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where prompts run: local worker processes (--devices), or Ray actors "
                             "(pip install 'nodeloom[ray]'; see docs/ray.md)")
    parser.add_argument("--address", help="with --executor ray: the cluster to join (auto, HOST:PORT or "
                                          "ray://HOST:PORT); default: start a local Ray")
    parser.add_argument("--workers", type=int, help="with --executor ray: number of actors "
                                                    "(default: one per GPU of the cluster, or per --actor-cpus CPUs)")
    parser.add_argument("--actor-cpus", type=float, default=1.0, help="with --executor ray: CPUs per actor")
    parser.add_argument("--base", type=Path, default=Path.cwd(),
                        help="base folder holding models/, input/, output/, temp/, user/")
    parser.add_argument("--models", type=Path, action="append", default=[],
                        help="a models root (repeatable; default BASE/models)")
    parser.add_argument("--extra-model-paths", type=Path, help="ComfyUI's extra_model_paths.yaml")
    parser.add_argument("--output-dir", type=Path)
    parser.add_argument("--input-dir", type=Path)
    parser.add_argument("--user-dir", type=Path)
    parser.add_argument("--db", type=Path, help="SQLite file for the queue and history (default USER/nodeloom.sqlite3)")
    parser.add_argument("--plugins-dir", "--plugins", dest="plugins", type=Path, action="append", default=[],
                        metavar="DIR", help="folder of plugin packages (repeatable; default: BASE/plugins if it exists)")
    parser.add_argument("--node-packs", default=None,
                        help="node packs the workers load (comma-separated modules; empty for none; "
                             "default: every pack of the nodeloom.plugins entry-point group)")
    parser.add_argument("--max-upload-mb", type=float, default=100.0, help="largest image upload, in MB (default 100)")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="images with more pixels are refused before decoding, on upload, preview and "
                             f"LoadImage (default {DEFAULT_MAX_IMAGE_PIXELS}, 8192x8192)")
    parser.add_argument("--max-prompt-mb", type=float, default=16.0, help="largest POST /prompt body")
    parser.add_argument("--max-userdata-mb", type=float, default=10.0, help="largest /userdata file body")
    parser.add_argument("--max-body-kb", type=float, default=1024.0,
                        help="largest body of every other route (settings, queue commands)")
    parser.add_argument("--max-string-chars", type=int, default=256 << 10,
                        help="longest STRING input value a prompt may carry")
    parser.add_argument("--max-nodes", type=int, default=10_000, help="most nodes a submitted prompt may have")
    parser.add_argument("--cache-policy", choices=("lru", "none"), default="lru", help="each worker's output cache")
    parser.add_argument("--cache-max-entries", type=int, default=256)
    parser.add_argument("--cache-max-bytes", type=int, default=128 << 20,
                        help="estimated bytes of cached outputs per worker (default 128 MiB: what re-runs "
                             "of the last few prompts need, so the idle server stays small)")
    parser.add_argument("--cache-when-idle", choices=IDLE_KEEP, default="last-prompt",
                        help="what each worker's output cache keeps once the worker is idle: the last "
                             "prompt's outputs (what re-running it, changed or not, needs; default) or all")
    parser.add_argument("--ws-send-queue", type=int, default=1024,
                        help="messages buffered per websocket client before a client too slow to read is dropped")
    parser.add_argument("--webhook-timeout", type=float, default=10.0,
                        help="seconds a completion webhook receiver may take to answer")
    parser.add_argument("--frontend-root", type=Path, help="static frontend folder to serve at /")
    parser.add_argument("--allow-origin", action="append", default=[], help="allowed cross-site origin (CORS)")
    parser.add_argument("--log-level", default="info")


def _resolved(path: Path | None) -> Path | None:
    return path.resolve() if path is not None else None


def settings_from(args: argparse.Namespace, model_settings: dict[str, Any]) -> ServerSettings:
    """The server's settings from serve's parsed options; ``model_settings`` are the plugins'
    settings for them (``registry.settings(vars(args))``)."""
    # Resolved now: the workers and error messages must not depend on where they run from.
    folders = FolderPaths(base=args.base.resolve(), models_roots=[m.resolve() for m in args.models],
                          input_dir=_resolved(args.input_dir), output_dir=_resolved(args.output_dir),
                          user_dir=_resolved(args.user_dir))
    if args.extra_model_paths:
        folders.load_extra_model_paths(args.extra_model_paths)
    if getattr(args, "registry", None) is not None:  # the plugins' bundled models (the demo pack's)
        args.registry.add_bundled_model_paths(folders)
    plugin_dirs = plugin_dirs_of([p.resolve() for p in args.plugins] or None, folders.base)
    return ServerSettings(host=args.host, port=args.port, token=args.token, folders=folders,
                          user_dir=_resolved(args.user_dir), db_path=_resolved(args.db),
                          devices=[d.strip() for d in args.devices.split(",") if d.strip()],
                          plugin_dirs=plugin_dirs,
                          builtin_plugins=None if args.node_packs is None else
                          tuple(p.strip() for p in args.node_packs.split(",") if p.strip()),
                          max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                          max_image_pixels=args.max_image_pixels,
                          max_prompt_bytes=int(args.max_prompt_mb * 1024 * 1024),
                          max_userdata_bytes=int(args.max_userdata_mb * 1024 * 1024),
                          max_body_bytes=int(args.max_body_kb * 1024), max_string_chars=args.max_string_chars,
                          max_nodes=args.max_nodes,
                          cache_policy=args.cache_policy, cache_entries=args.cache_max_entries,
                          cache_max_bytes=args.cache_max_bytes, cache_when_idle=args.cache_when_idle,
                          webhook_timeout=args.webhook_timeout, client_send_queue=args.ws_send_queue,
                          frontend_root=args.frontend_root, allow_origins=list(args.allow_origin),
                          model_settings=model_settings, executor=args.executor, ray_address=args.address,
                          ray_workers=args.workers, ray_actor_cpus=args.actor_cpus)


def main(argv: list[str] | None = None) -> int:
    """``python -m server.cli ARGS``: exactly ``nodeloom serve ARGS`` (one parser, one plugin
    loading)."""
    from graph_runtime.cli import main as nodeloom

    return nodeloom(["serve", *(sys.argv[1:] if argv is None else argv)])


def serve(args: argparse.Namespace) -> int:
    """Run the server from parsed options (``args.registry``: the loaded plugins)."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from(args, args.registry.settings(vars(args)))
        if settings.executor == "ray":
            from server.execution.ray_pool import check_address, import_ray

            import_ray()  # a missing Ray or a wrong --address is one line now, not a failed start-up later
            check_address(settings.ray_address)
        from server.app import create_app

        app = create_app(settings)
    except (ValueError, AssertionError) as exc:
        print(f"nodeloom serve: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    # The websockets library through uvicorn's sans-I/O binding (its legacy binding is deprecated).
    uvicorn.run(app, host=settings.host, port=settings.port, ws="websockets-sansio", log_level=args.log_level,
                access_log=False,
                # Our messages are JSON of a few hundred bytes and JPEG previews: compressing each
                # costs both ends CPU and saves next to nothing.
                ws_per_message_deflate=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
