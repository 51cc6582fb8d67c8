"""The weight change of one module for each LoRA-family format, as ComfyUI applies it.

A file's keys for one module are first named by role (:data:`ROLES`), then :func:`build` turns the
roles into a :class:`ModulePatch`. The formulas are LyCORIS's (``lycoris/functional``) with
ComfyUI's conventions (``comfy/weight_adapter``), for a target weight ``W`` of shape
``[out, in, *kernel]``:

- LoRA / LoCon: ``ΔW = up @ down`` (``up [out, r]``, ``down [r, in*kernel]``), scale ``alpha / r``;
  with a Tucker core ``lora_mid [r, r, *kernel]`` (LoCon on convolutions, ``down`` and ``up`` 1x1):
  ``ΔW[o, i, ...] = Σ up[o, m] · mid[m, n, ...] · down[n, i]``.
- LoHa (Hadamard): ``ΔW = (w1_a @ w1_b) ⊙ (w2_a @ w2_b)``, scale ``alpha / rank(w1_b)``; with Tucker
  cores ``hada_t1/t2 [r, r, *kernel]`` each factor is ``einsum(t, w_b, w_a)`` (``w_a [r, out]``).
- LoKr (Kronecker): ``ΔW = w1 ⊗ w2``, each factor given whole (``lokr_w1``) or as a product
  (``lokr_w1_a @ lokr_w1_b``; ``lokr_w2`` optionally through a Tucker core ``lokr_t2``); scale
  ``alpha / rank`` of the factorised one (``w2`` first), 1 when both are whole.
- diff: ``ΔW = diff`` (``.diff`` / ``.w_norm``), ``Δb = diff_b`` (``.diff_b`` / ``.b_norm``), scale 1.
- peft's LoRA bias (``lora_B.bias``): ``Δb = alpha / r · bias``.

Without an ``alpha`` the scale is 1. ``W ← W + strength · scale · ΔW`` except with DoRA
(``dora_scale``, Liu et al. 2024, arXiv:2402.09353; ComfyUI's ``weight_decompose``):
``W' = W + scale · ΔW``, ``W'' = dora_scale · W' / ‖W'‖`` (the norm taken per input channel, or per
output channel when ``dora_scale`` has the output's length first) and ``W ← W + strength · (W'' − W)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor

# file suffix (after the module name and a ".") -> role
ROLES: dict[str, str] = {
    "lora_up.weight": "up", "lora_B.weight": "up", "lora.up.weight": "up", "lora_linear_layer.up.weight": "up",
    "lora_down.weight": "down", "lora_A.weight": "down", "lora.down.weight": "down",
    "lora_linear_layer.down.weight": "down", "lora_mid.weight": "mid",
    "lora_up.bias": "up_bias", "lora_B.bias": "up_bias",
    "alpha": "alpha", "dora_scale": "dora_scale",
    **{f"hada_{n}": f"hada_{n}" for n in ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")},
    **{f"lokr_{n}": f"lokr_{n}" for n in ("w1", "w2", "w1_a", "w1_b", "w2_a", "w2_b", "t2")},
    "diff": "diff", "w_norm": "diff", "diff_b": "diff_b", "b_norm": "diff_b",
}
# diffusers' attention-processor format glues the suffix on: "...processor.to_q_lora.up.weight"
GLUED_ROLES = {"_lora.up.weight": "up", "_lora.down.weight": "down"}

_LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
_LOKR = ("lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


@dataclass(frozen=True)
class ModulePatch:
    """One module's change. ``kind``: lora, loha, lokr, diff or bias (a bias change only)."""

    kind: str
    tensors: dict[str, Tensor]
    alpha: float | None = None
    dora_scale: Tensor | None = None
    bias: Tensor | None = None  # Δb before ``bias_scale``
    bias_scale: float = 1.0
    roles: frozenset[str] = field(default_factory=frozenset)  # the roles it consumed

    @property
    def scale(self) -> float:
        rank = self._rank()
        return 1.0 if self.alpha is None or rank is None else self.alpha / rank

    def _rank(self) -> int | None:
        t = self.tensors
        if self.kind == "lora":
            return int(t["down"].shape[0])
        if self.kind == "loha":
            return int(t["hada_w1_b"].shape[0])
        if self.kind == "lokr":
            factor = "lokr_w2_b" if "lokr_w2_b" in t else "lokr_w1_b" if "lokr_w1_b" in t else None
            return None if factor is None else int(t[factor].shape[0])
        return None

    def weight_diff(self, device: torch.device | str = "cpu") -> Tensor | None:
        """ΔW before scale and strength, float32 (``device="meta"`` gives only its shape)."""
        t = {k: v.to(device=device, dtype=torch.float32) for k, v in self.tensors.items()}
        if self.kind == "lora":
            up, down = t["up"].flatten(1), t["down"].flatten(1)
            if "mid" in t:
                return torch.einsum("m n ..., i m, n j -> i j ...", t["mid"], up, down)
            return up @ down
        if self.kind == "loha":
            return _hada_factor(t, "1") * _hada_factor(t, "2")
        if self.kind == "lokr":
            w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
            if "lokr_w2" in t:
                w2 = t["lokr_w2"]
            elif "lokr_t2" in t:
                w2 = torch.einsum("i j ..., j r, i p -> p r ...", t["lokr_t2"], t["lokr_w2_b"], t["lokr_w2_a"])
            else:
                w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
            w1 = w1.reshape(*w1.shape, *[1] * (w2.dim() - w1.dim()))
            return torch.kron(w1.contiguous(), w2.contiguous())
        if self.kind == "diff":
            return t["diff"]
        return None

    def apply(self, weight: Tensor, bias: Tensor | None, strength: float) -> None:
        """Add this patch at ``strength`` to ``weight`` (and ``bias``) in place."""
        diff = self.weight_diff(weight.device)
        if diff is not None:
            diff = diff.reshape(weight.shape) * self.scale
            if self.dora_scale is None:
                weight.add_((strength * diff).to(weight.dtype))
            else:
                weight.copy_(_decomposed(weight.float(), diff, self.dora_scale.to(weight.device).float(),
                                         strength).to(weight.dtype))
        if self.bias is not None and bias is not None:
            delta = self.bias.to(device=bias.device, dtype=torch.float32).reshape(bias.shape)
            bias.add_((strength * self.bias_scale * delta).to(bias.dtype))

    def defect(self) -> str | None:
        """Why this patch's own tensors do not combine into a change (a broken file), or None.
        Checked on meta tensors at load, so a broken module never reaches the sampler."""
        if self._rank() == 0:  # the scale alpha / rank would divide by zero at sampling
            return f"its {self.kind} has rank 0"
        try:
            self.weight_diff("meta")
        except (RuntimeError, IndexError):  # torch's shape errors for products that do not chain
            shapes = ", ".join(f"{role} {list(t.shape)}" for role, t in sorted(self.tensors.items()))
            return f"its {self.kind} tensors do not combine ({shapes})"
        return None

    def check(self, weight: Tensor, bias: Tensor | None) -> str | None:
        """Why this patch does not fit a module with ``weight`` (and ``bias``), or None."""
        diff = self.weight_diff("meta")
        if diff is not None and (diff.shape[0] != weight.shape[0] or diff.numel() != weight.numel()):
            return f"the file's {self.kind} gives shape {list(diff.shape)}, the model's weight is {list(weight.shape)}"
        if self.dora_scale is not None:  # one magnitude per channel of the axis _decomposed normalises
            channels = weight.shape[0] if _dora_per_output(self.dora_scale, weight) else weight.shape[1]
            if self.dora_scale.numel() != channels:
                return f"dora_scale has shape {list(self.dora_scale.shape)}, the model's weight is {list(weight.shape)}"
        if self.bias is not None:
            if bias is None:
                return "the file changes a bias; the model's module has none"
            if self.bias.numel() != bias.numel():
                return f"the file's bias change has shape {list(self.bias.shape)}, the model's bias is {list(bias.shape)}"
        return None


def _hada_factor(t: dict[str, Tensor], n: str) -> Tensor:
    a, b = t[f"hada_w{n}_a"], t[f"hada_w{n}_b"]
    if f"hada_t{n}" in t:  # Tucker form: hada_w{n}_a is [r, out]
        return torch.einsum("i j ..., j r, i p -> p r ...", t[f"hada_t{n}"], b, a)
    return a @ b


def _dora_per_output(dora_scale: Tensor, weight: Tensor) -> bool:
    """Whether ``dora_scale`` holds output-channel magnitudes (its first axis is the output's)."""
    return dora_scale.shape[:1] == weight.shape[:1] and weight.shape[0] != 1


def _decomposed(weight: Tensor, diff: Tensor, dora_scale: Tensor, strength: float) -> Tensor:
    """DoRA: the patched weight's direction with ``dora_scale`` as its magnitude."""
    merged = weight + diff
    if _dora_per_output(dora_scale, weight):  # LyCORIS wd_on_out
        norm = merged.flatten(1).norm(dim=1).reshape(-1, *[1] * (weight.dim() - 1))
    else:
        norm = merged.transpose(0, 1).flatten(1).norm(dim=1).reshape(1, -1, *[1] * (weight.dim() - 2))
    decomposed = merged * (dora_scale.reshape(norm.shape) / norm)
    return weight + strength * (decomposed - weight)


def build(parts: dict[str, Tensor], alpha: float | None = None) -> ModulePatch | None:
    """The patch that a module's tensors (by role) describe, or None when they describe none
    (an incomplete set: the caller reports the roles it did not consume). ``alpha`` stands in
    for a missing ``alpha`` tensor (peft's ``lora_alpha`` read from the file's metadata)."""
    if "alpha" in parts:
        alpha = float(parts["alpha"])
    dora = parts.get("dora_scale")
    bias, bias_roles = parts.get("diff_b"), {"diff_b"} & parts.keys()
    weight_patch: tuple[str, tuple[str, ...]] | None = None
    if "up" in parts and "down" in parts:
        weight_patch = ("lora", ("up", "down", "mid"))
    elif all(role in parts for role in _LOHA):
        weight_patch = ("loha", (*_LOHA, "hada_t1", "hada_t2") if {"hada_t1", "hada_t2"} <= parts.keys() else _LOHA)
    elif ("lokr_w1" in parts or {"lokr_w1_a", "lokr_w1_b"} <= parts.keys()) and \
            ("lokr_w2" in parts or {"lokr_w2_a", "lokr_w2_b"} <= parts.keys()):
        weight_patch = ("lokr", _LOKR)
    elif "diff" in parts:
        weight_patch = ("diff", ("diff",))
    if weight_patch is None:
        if bias is None:
            return None
        return ModulePatch("bias", {}, bias=bias, roles=frozenset(bias_roles))
    kind, roles = weight_patch
    tensors = {role: parts[role] for role in roles if role in parts}
    patch = ModulePatch(kind, tensors, alpha=alpha, dora_scale=dora if kind != "diff" else None)
    consumed = set(tensors) | bias_roles | ({"alpha"} & parts.keys())
    if patch.dora_scale is not None:
        consumed.add("dora_scale")
    bias_scale = 1.0
    if bias is None and kind == "lora" and "up_bias" in parts:
        bias, bias_scale = parts["up_bias"], patch.scale
        consumed.add("up_bias")
    return ModulePatch(kind, tensors, alpha=alpha, dora_scale=patch.dora_scale, bias=bias, bias_scale=bias_scale,
                       roles=frozenset(consumed))
