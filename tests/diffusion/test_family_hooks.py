"""Plugins' samplers and denoiser hooks: a plugin's entries are added all or none, refusals are
recorded on the plugin, and a hook that raises names itself and its plugin."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from nodes.diffusion.denoiser import DenoiserHooks, UNetInputs
from nodes.diffusion.plugins import install_family_hooks
from nodes.diffusion.samplers import BUILTIN_SAMPLERS, DiffusersSampler, SamplerRegistry


def _hook_caller(samplers: dict[str, Any] | None = None, hooks: list[Any] | None = None,
                 plugin: str = "plugins.p") -> Any:
    def impl(function: Any) -> Any:
        return SimpleNamespace(plugin_name=plugin, function=function)

    caller = SimpleNamespace()
    if samplers is not None:
        caller.nodeloom_register_samplers = SimpleNamespace(get_hookimpls=lambda: [impl(lambda: samplers)])
    if hooks is not None:
        caller.nodeloom_register_denoiser_hooks = SimpleNamespace(get_hookimpls=lambda: [impl(lambda: hooks)])
    return caller


class _Hook:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name, self.fail = name, fail

    def __call__(self, call: Any) -> UNetInputs | None:
        if self.fail:
            raise ZeroDivisionError("hook bug")
        return None


def test_a_clashing_sampler_refuses_the_whole_plugin_result() -> None:
    samplers = SamplerRegistry(BUILTIN_SAMPLERS)
    good = DiffusersSampler("EulerDiscreteScheduler")
    problems = install_family_hooks(_hook_caller({"fine_one": good, "euler": good}), samplers=samplers,
                                    denoiser_hooks=DenoiserHooks())
    assert "fine_one" not in samplers.names()  # not half-registered
    assert "'euler'" in problems["plugins.p"] and "already registered by builtin" in problems["plugins.p"]


def test_a_bad_denoiser_entry_refuses_the_good_ones_of_the_same_plugin() -> None:
    hooks = DenoiserHooks()
    problems = install_family_hooks(_hook_caller(hooks=[_Hook("ok"), object()]),
                                    samplers=SamplerRegistry(BUILTIN_SAMPLERS), denoiser_hooks=hooks)
    assert list(hooks) == []
    assert "is not a DenoiserHook" in problems["plugins.p"]


def test_valid_entries_are_added() -> None:
    samplers, hooks = SamplerRegistry(BUILTIN_SAMPLERS), DenoiserHooks()
    caller = _hook_caller({"mine": DiffusersSampler("EulerDiscreteScheduler")}, [_Hook("ok")])
    assert install_family_hooks(caller, samplers=samplers, denoiser_hooks=hooks) == {}
    assert "mine" in samplers.names() and [h.name for h in hooks] == ["ok"]


def test_startup_records_the_refusal_on_the_plugin(tmp_path) -> None:
    (tmp_path / "clash.py").write_text(
        "from graph_runtime import hookimpl\n"
        "from nodes.diffusion.samplers import DiffusersSampler\n"
        "@hookimpl\n"
        "def nodeloom_register_samplers():\n"
        "    return {'euler': DiffusersSampler('EulerDiscreteScheduler')}\n")
    from graph_runtime.registry import load_registry

    registry = load_registry(plugin_dirs=[tmp_path], builtins=("nodes.diffusion",), entry_points=False)
    registry.startup({})
    record = next(p for p in registry.plugins if p.name == "plugins.clash")
    assert record.error is not None and "'euler'" in record.error and "startup failed" in record.error


def test_a_raising_hook_names_itself_and_its_plugin() -> None:
    from nodes.diffusion import denoiser as module

    hook = _Hook("exploding", fail=True)
    module.DENOISER_HOOKS.register(hook, source="plugin 'plugins.boom'")
    try:
        den = object.__new__(module.Denoiser)
        den.hooks = [hook]
        with pytest.raises(RuntimeError, match=r"denoiser hook 'exploding' from plugin 'plugins.boom' "
                                               r"failed at step 2: ZeroDivisionError: hook bug"):
            den._run_hooks(SimpleNamespace(), 2)
    finally:
        module.DENOISER_HOOKS._hooks = [h for h in module.DENOISER_HOOKS if h is not hook]
        module.DENOISER_HOOKS.origin.pop("exploding", None)


def test_sampler_names_must_be_strings() -> None:
    samplers = SamplerRegistry(BUILTIN_SAMPLERS)
    assert "not a non-empty string" in samplers.problem(3, DiffusersSampler("EulerDiscreteScheduler"), source="x")
