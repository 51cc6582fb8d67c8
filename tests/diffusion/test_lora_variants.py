"""Each LoRA-family variant changes a module's weights by its formula, computed here independently:
by composing the adapter's own layers (LoCon), by explicit products (LoHa, LoKr) or by the DoRA
normalisation written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nodes.diffusion.lora import Patch, patched
from nodes.diffusion.lora_variants import build

STRENGTH = 0.7


def rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) * 0.3


def apply(module: torch.nn.Module, parts: dict[str, torch.Tensor], strength: float = STRENGTH) -> torch.Tensor:
    """The module's weight while the patch built from ``parts`` is applied (restored after)."""
    change = build(parts)
    assert change is not None
    with patched(module, [Patch({"layer": change}, strength)]) as m:
        weight = m.get_submodule("layer").weight.detach().clone()
    return weight


def holder(layer: torch.nn.Module) -> torch.nn.Module:
    return torch.nn.ModuleDict({"layer": layer})


def test_lora_linear_scales_by_alpha_over_rank() -> None:
    module = holder(torch.nn.Linear(6, 5))
    base = module["layer"].weight.detach().clone()
    up, down = rand(5, 3), rand(3, 6)
    got = apply(module, {"up": up, "down": down, "alpha": torch.tensor(1.5)})
    assert torch.allclose(got, base + STRENGTH * (1.5 / 3) * up @ down, atol=1e-6)
    assert torch.equal(module["layer"].weight, base), "the original weight is restored"


def test_locon_conv_equals_its_down_then_up_convolutions() -> None:
    module = holder(torch.nn.Conv2d(4, 6, 3, padding=1, bias=False))
    x = torch.randn(1, 4, 8, 8)
    down, up = rand(2, 4, 3, 3), rand(6, 2, 1, 1)
    weight = apply(module, {"down": down, "up": up, "alpha": torch.tensor(1.0)})
    adapter = F.conv2d(F.conv2d(x, down, padding=1), up)
    expected = F.conv2d(x, module["layer"].weight, padding=1) + STRENGTH * 0.5 * adapter
    assert torch.allclose(F.conv2d(x, weight, padding=1), expected, atol=1e-5)


def test_locon_tucker_mid_equals_down_mid_up_convolutions() -> None:
    module = holder(torch.nn.Conv2d(4, 6, 3, padding=1, bias=False))
    x = torch.randn(1, 4, 8, 8)
    down, mid, up = rand(3, 4, 1, 1), rand(3, 3, 3, 3), rand(6, 3, 1, 1)
    weight = apply(module, {"down": down, "mid": mid, "up": up, "alpha": torch.tensor(3.0)})
    adapter = F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up)
    expected = F.conv2d(x, module["layer"].weight, padding=1) + STRENGTH * 1.0 * adapter
    assert torch.allclose(F.conv2d(x, weight, padding=1), expected, atol=1e-5)
    without_mid = apply(module, {"down": rand(3, 4, 3, 3), "up": up, "alpha": torch.tensor(3.0)})
    assert not torch.allclose(weight, without_mid)


def test_loha_is_the_hadamard_product_of_two_low_rank_products() -> None:
    module = holder(torch.nn.Linear(6, 5))
    base = module["layer"].weight.detach().clone()
    w1a, w1b, w2a, w2b = rand(5, 2), rand(2, 6), rand(5, 2), rand(2, 6)
    got = apply(module, {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b,
                         "alpha": torch.tensor(1.0)})
    product = torch.zeros(5, 6)
    for o in range(5):
        for i in range(6):
            product[o, i] = (w1a[o] @ w1b[:, i]) * (w2a[o] @ w2b[:, i])
    assert torch.allclose(got, base + STRENGTH * 0.5 * product, atol=1e-6)


def test_loha_tucker_conv() -> None:
    module = holder(torch.nn.Conv2d(4, 6, 3, bias=False))
    base = module["layer"].weight.detach().clone()
    r = 2
    parts = {"hada_w1_a": rand(r, 6), "hada_w1_b": rand(r, 4), "hada_t1": rand(r, r, 3, 3),
             "hada_w2_a": rand(r, 6), "hada_w2_b": rand(r, 4), "hada_t2": rand(r, r, 3, 3)}

    def rebuild(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        # [k, l, i, j] @ [j, in] -> [k, l, i, in]; [out, i] @ -> [k, l, out, in]
        return (wa.T @ (t.permute(2, 3, 0, 1) @ wb)).permute(2, 3, 0, 1)

    delta = rebuild(parts["hada_t1"], parts["hada_w1_a"], parts["hada_w1_b"]) * \
        rebuild(parts["hada_t2"], parts["hada_w2_a"], parts["hada_w2_b"])
    got = apply(module, parts)  # no alpha: scale 1
    assert torch.allclose(got, base + STRENGTH * delta, atol=1e-6)


def kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1], *b.shape[2:])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i * b.shape[0]:(i + 1) * b.shape[0], j * b.shape[1]:(j + 1) * b.shape[1]] = a[i, j] * b
    return out


def test_lokr_is_a_kronecker_product_scaled_by_the_factorised_rank() -> None:
    module = holder(torch.nn.Linear(6, 4))
    base = module["layer"].weight.detach().clone()
    w1, w2a, w2b = rand(2, 3), rand(2, 1), rand(1, 2)
    got = apply(module, {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": torch.tensor(0.5)})
    assert torch.allclose(got, base + STRENGTH * (0.5 / 1) * kron(w1, w2a @ w2b), atol=1e-6)
    # Both factors whole: LyCORIS ignores alpha (scale 1).
    whole = apply(module, {"lokr_w1": w1, "lokr_w2": rand(2, 2), "alpha": torch.tensor(0.5)})
    w2 = build({"lokr_w1": w1, "lokr_w2": rand(2, 2)})
    assert w2 is not None and w2.scale == 1.0
    assert whole.shape == base.shape


def test_lokr_conv_with_tucker_core_and_factorised_w1() -> None:
    module = holder(torch.nn.Conv2d(4, 6, 3, bias=False))
    base = module["layer"].weight.detach().clone()
    w1a, w1b = rand(2, 1), rand(1, 2)
    t2, w2a, w2b = rand(2, 2, 3, 3), rand(2, 3), rand(2, 2)
    got = apply(module, {"lokr_w1_a": w1a, "lokr_w1_b": w1b, "lokr_t2": t2, "lokr_w2_a": w2a, "lokr_w2_b": w2b,
                         "alpha": torch.tensor(4.0)})
    w2 = (w2a.T @ (t2.permute(2, 3, 0, 1) @ w2b)).permute(2, 3, 0, 1)  # [3, 2, 3, 3]
    assert torch.allclose(got, base + STRENGTH * (4.0 / 2) * kron(w1a @ w1b, w2), atol=1e-5)


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_dora_rescales_each_input_column_to_dora_scale(strength: float) -> None:
    module = holder(torch.nn.Linear(6, 5))
    base = module["layer"].weight.detach().clone()
    up, down, magnitude = rand(5, 2), rand(2, 6), torch.rand(1, 6) + 0.5
    got = apply(module, {"up": up, "down": down, "alpha": torch.tensor(1.0), "dora_scale": magnitude}, strength)
    merged = base + 0.5 * up @ down
    columns = torch.sqrt((merged ** 2).sum(dim=0, keepdim=True))
    expected = base + strength * (magnitude * merged / columns - base)
    assert torch.allclose(got, expected, atol=1e-6)
    if strength == 1.0:
        assert torch.allclose(got.norm(dim=0), magnitude[0], atol=1e-5)
    plain = apply(module, {"up": up, "down": down, "alpha": torch.tensor(1.0)}, strength)
    assert (got - plain).abs().max() > 1e-3, "dora_scale must change the result"


def test_dora_with_output_magnitudes_rescales_rows() -> None:
    module = holder(torch.nn.Linear(6, 5))
    up, down, magnitude = rand(5, 2), rand(2, 6), torch.rand(5, 1) + 0.5
    got = apply(module, {"up": up, "down": down, "dora_scale": magnitude}, 1.0)
    assert torch.allclose(got.norm(dim=1), magnitude[:, 0], atol=1e-5)


def test_diff_and_diff_b_add_full_tensors() -> None:
    module = holder(torch.nn.Linear(6, 5))
    base_w, base_b = module["layer"].weight.detach().clone(), module["layer"].bias.detach().clone()
    diff, diff_b = rand(5, 6), rand(5)
    change = build({"diff": diff, "diff_b": diff_b})
    assert change is not None and change.roles == {"diff", "diff_b"}
    with patched(module, [Patch({"layer": change}, STRENGTH)]) as m:
        assert torch.allclose(m["layer"].weight, base_w + STRENGTH * diff)
        assert torch.allclose(m["layer"].bias, base_b + STRENGTH * diff_b)
    assert torch.equal(module["layer"].bias, base_b)


def test_peft_lora_bias_is_scaled_like_the_lora() -> None:
    module = holder(torch.nn.Linear(6, 5))
    base_b = module["layer"].bias.detach().clone()
    bias = rand(5)
    change = build({"up": rand(5, 2), "down": rand(2, 6), "up_bias": bias, "alpha": torch.tensor(1.0)})
    assert change is not None
    with patched(module, [Patch({"layer": change}, STRENGTH)]) as m:
        assert torch.allclose(m["layer"].bias, base_b + STRENGTH * 0.5 * bias, atol=1e-6)


def test_incomplete_sets_build_nothing_and_fits_are_checked() -> None:
    assert build({"up": rand(5, 2)}) is None
    assert build({"hada_w1_a": rand(5, 2), "hada_w1_b": rand(2, 6)}) is None
    change = build({"up": rand(5, 2), "down": rand(2, 7)})
    assert change is not None
    problem = change.check(torch.zeros(5, 6), None)
    assert problem is not None and "[5, 7]" in problem and "[5, 6]" in problem
    assert build({"diff_b": rand(5)}).check(torch.zeros(5, 6), None) == \
        "the file changes a bias; the model's module has none"


@pytest.mark.parametrize("parts, problem", [
    ({"up": rand(5, 8), "down": rand(4, 6)}, "lora tensors do not combine (down [4, 6], up [5, 8])"),
    ({"up": rand(5), "down": rand(6)}, "lora tensors do not combine"),
    ({"up": rand(5, 2, 1, 1), "mid": rand(3, 3, 3, 3), "down": rand(2, 6, 1, 1)}, "lora tensors do not combine"),
    ({"hada_w1_a": rand(5, 2), "hada_w1_b": rand(3, 6), "hada_w2_a": rand(5, 2), "hada_w2_b": rand(2, 6)},
     "loha tensors do not combine"),
    ({"up": torch.zeros(5, 0), "down": torch.zeros(0, 6), "alpha": torch.tensor(1.0)}, "lora has rank 0"),
])
def test_tensors_that_do_not_combine_are_a_defect_not_a_sampling_error(parts: dict[str, torch.Tensor],
                                                                        problem: str) -> None:
    """Found broken: factors whose inner sizes differ raised torch's bare matmul/einsum error, and a
    rank-0 LoRA a ZeroDivisionError inside KSampler."""
    change = build(parts)
    assert change is not None
    assert problem in (change.defect() or "")


def test_dora_scale_is_checked_along_the_axis_it_normalises() -> None:
    """Found broken: dora_scale [1, out] on a non-square weight passed the check (its length is the
    output's) and then failed inside KSampler: input-channel magnitudes need the input's length."""
    parts = {"up": rand(8, 2), "down": rand(2, 4)}
    assert build({**parts, "dora_scale": rand(1, 8)}).check(torch.zeros(8, 4), None) == \
        "dora_scale has shape [1, 8], the model's weight is [8, 4]"
    assert build({**parts, "dora_scale": rand(1, 4)}).check(torch.zeros(8, 4), None) is None
    assert build({**parts, "dora_scale": rand(8, 1)}).check(torch.zeros(8, 4), None) is None
