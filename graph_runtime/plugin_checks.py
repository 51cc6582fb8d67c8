"""Checks a plugin must pass once every plugin is registered: each hook implementation matches a
hook specification, and each link type a node declares is known. A failure names the plugin, the
hook or node, and the nearest valid name, so a typo is found at load time instead of later as
"loaded, 0 nodes" or a type mismatch.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import pluggy

from graph_runtime.node import Node


class UnknownHook(pluggy.PluginValidationError):
    """A plugin implements a hook that no specification declares (a misspelt hook name)."""


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``name`` (difflib ratio ≥ 0.6), or None."""
    found = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return found[0] if found else None


def pending_failure(manager: pluggy.PluginManager) -> UnknownHook | None:
    """The first hook implementation left without a specification, as pluggy's
    ``check_pending()`` finds it, described for its plugin; None when every hook has a spec.

    Call it after every plugin is registered: a spec a plugin adds through ``nodeloom_addhooks``
    also covers implementations registered before it."""
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        plugin = exc.plugin
    else:
        return None
    name = manager.get_name(plugin) or repr(plugin)
    specced = [hook for hook in vars(manager.hook) if not hook.startswith("_")
               and getattr(manager.hook, hook).has_spec()]
    unknown = [caller.name for caller in manager.get_hookcallers(plugin) or [] if not caller.has_spec()]
    hook = unknown[0] if unknown else "?"
    guess = nearest(hook, specced)
    hint = f"; did you mean {guess!r}?" if guess else f"; the hooks are {', '.join(sorted(specced))}"
    return UnknownHook(plugin, f"plugin {name!r} implements hook {hook!r}, which matches no hook "
                               f"specification{hint}")


def unknown_link_types(cls: type[Node], types: Mapping[str, str]) -> list[str]:
    """The link types ``cls`` declares (linked inputs and outputs; ``A,B`` lists each) that are
    neither core types nor registered by a plugin."""
    declared = [spec.type for spec in cls.inputs if not spec.hidden and not spec.is_widget]
    declared += [out.type for out in cls.outputs]
    missing: list[str] = []
    for entry in declared:
        for name in (part.strip() for part in entry.split(",")):
            if name and name not in types and name not in missing:
                missing.append(name)
    return missing


def undeclared_type_reason(missing: list[str], types: Mapping[str, str]) -> str:
    """Why a node with unknown link types is skipped, naming each type and its nearest known one."""
    parts = []
    for name in missing:
        guess = nearest(name, types)
        parts.append(f"{name!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
    return (f"undeclared link type {', '.join(parts)}: not a core type, and no plugin registers it "
            "through nodeloom_register_types")


def call_impl(impl: Any, **kwargs: Any) -> Any:
    """Call one hook implementation with the spec's keyword arguments it accepts (an
    implementation may take any subset)."""
    return impl.function(**{name: kwargs[name] for name in impl.argnames if name in kwargs})


def undecorated_hooks(plugin: ModuleType | object, project: str) -> list[str]:
    """The ``nodeloom_*`` functions a plugin module defines (any, for another kind of plugin
    object) without ``@hookimpl``: pluggy ignores them, so such a plugin would load with nothing
    registered and no word why."""
    owner = getattr(plugin, "__name__", None) if isinstance(plugin, ModuleType) else None
    found = [(name, getattr(plugin, name, None)) for name in dir(plugin) if name.startswith(f"{project}_")]
    return sorted(name for name, value in found
                  if inspect.isfunction(value) and owner in (None, value.__module__)
                  and not hasattr(value, f"{project}_impl"))
