"""Importing the plugins of a plugins folder: each package or module ``NAME`` there is the plugin
``plugins.NAME``. Two folders (or two registries in one process) may hold a package of the same
name: a module already imported is reused only when it came from the same path, otherwise the
newcomer is imported under a module name of its own."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def folder_plugin_name(path: Path) -> str | None:
    """The plugin name of a package or module in a plugins folder, or None for anything else."""
    if path.name.startswith((".", "_")):
        return None
    if path.is_dir() and (path / "__init__.py").exists():
        return f"plugins.{path.name}"
    if path.is_file() and path.suffix == ".py":
        return f"plugins.{path.stem}"
    return None


def import_path(path: Path, plugin_name: str) -> ModuleType:
    """The module of the plugin at ``path``: imported as ``plugin_name``, or reused from
    ``sys.modules`` when that name already holds the module of this very path; a same-named
    module from another path gets a distinct module name (``plugin_name`` plus a hash of
    ``path``)."""
    for module_name in (plugin_name, f"{plugin_name}_{_path_hash(path)}"):
        cached = sys.modules.get(module_name)
        if cached is None:
            return _import(path, module_name)
        if _same_file(cached, _entry_file(path)):
            return cached
    raise ImportError(f"cannot import plugin {plugin_name} at {path}: its module names are taken "
                      "by modules from other paths")


def _entry_file(path: Path) -> Path:
    return path / "__init__.py" if path.is_dir() else path


def _same_file(module: ModuleType, file: Path) -> bool:
    origin = getattr(module, "__file__", None)
    return origin is not None and Path(origin).resolve() == file.resolve()


def _path_hash(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]


def _import(path: Path, module_name: str) -> ModuleType:
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            module_name, path / "__init__.py", submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import plugin at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
