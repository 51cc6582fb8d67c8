"""The inpaint control image (EcomXL convention) and what the apply nodes put in the conditioning."""

from __future__ import annotations

import torch

from nodes.control.models import chain_of, fit_hint
from nodes.control.nodes_apply import (ControlNetApplyAdvanced, ControlNetInpaintCondition,
                                       ControlNetInpaintingAliMamaApply, inpaint_control_image)


def _image_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(2, 32, 48, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 32, 48)
    mask[0, 4:20, 10:30] = 1.0
    mask[1, 8:16, 0:12] = 0.7  # > 0.5: generated
    mask[1, 20:24, 20:24] = 0.3  # <= 0.5: kept
    return image, mask


def test_inpaint_control_image_is_minus_one_exactly_where_masked(make_ctx) -> None:
    image, mask = _image_and_mask()
    out = ControlNetInpaintCondition().run(make_ctx(), image=image, mask=mask, invert_mask=False)[0]
    generate = (mask > 0.5)[..., None].expand_as(out)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert torch.all(out[generate] == -1.0)
    assert torch.equal(out[~generate], image[~generate])  # not normalised: the input's own values


def test_invert_mask_takes_a_product_mask(make_ctx) -> None:
    image, mask = _image_and_mask()
    product = 1.0 - mask
    out = ControlNetInpaintCondition().run(make_ctx(), image=image, mask=product, invert_mask=True)[0]
    assert torch.equal(out, inpaint_control_image(image, mask))


def test_alpha_channel_and_smaller_mask(make_ctx) -> None:
    rgba = torch.rand(1, 16, 16, 4)
    mask = torch.zeros(1, 8, 8)
    mask[:, :4] = 1.0
    out = inpaint_control_image(rgba, mask)
    assert out.shape == (1, 16, 16, 3)
    assert torch.all(out[:, :8] == -1.0) and torch.equal(out[:, 8:], rgba[:, 8:, :, :3])


def test_nearest_fit_keeps_minus_one_exact() -> None:
    image, mask = _image_and_mask()
    hint = inpaint_control_image(image, mask).movedim(-1, 1)
    fitted = fit_hint(hint, 64, 96, 4)
    assert fitted.shape == (4, 3, 64, 96)
    values = fitted[fitted < 0].unique()
    assert values.tolist() == [-1.0]


def test_apply_nodes_stack_in_order_and_leave_inputs_alone(make_ctx) -> None:
    ctx = make_ctx()
    net = object()
    positive = [[torch.zeros(1, 77, 32), {"pooled_output": None}]]
    negative = [[torch.ones(1, 77, 32), {"pooled_output": None}]]
    image, mask = _image_and_mask()
    p1, n1 = ControlNetInpaintingAliMamaApply().run(ctx, positive=positive, negative=negative, control_net=net, vae=None,
                                                    image=image, mask=mask, strength=0.5, start_percent=0.0,
                                                    end_percent=1.0)
    p2, n2 = ControlNetApplyAdvanced().run(ctx, positive=p1, negative=n1, control_net=net, image=image[..., :1],
                                           strength=0.6, start_percent=0.1, end_percent=0.9)
    assert "control" not in positive[0][1] and len(chain_of(p1[0][1])) == 1
    first, second = chain_of(p2[0][1])
    assert chain_of(n2[0][1]) == (first, second)
    assert (first.strength, second.strength, second.start, second.end) == (0.5, 0.6, 0.1, 0.9)
    assert torch.equal(first.image, inpaint_control_image(image, mask).movedim(-1, 1))
    assert second.image.shape == (2, 3, 32, 48)  # grey expanded to RGB
    assert [second.active(i, 10) for i in range(10)] == [False] + [True] * 8 + [False]


def test_start_after_end_is_a_validation_error() -> None:
    problem = ControlNetApplyAdvanced.validate_inputs(None, start_percent=0.8, end_percent=0.2)
    assert problem is not None and "start_percent" in problem and "0.8" in problem


def test_output_cache_counts_the_control_image_not_the_models(make_ctx) -> None:
    from graph_runtime.cache import estimate_nbytes

    image, mask = _image_and_mask()
    positive = [[torch.zeros(1, 77, 32), {}]]
    p, _ = ControlNetApplyAdvanced().run(make_ctx(), positive=positive, negative=positive, control_net=object(),
                                         image=image, strength=1.0, start_percent=0.0, end_percent=1.0)
    assert estimate_nbytes(p) >= image.numel() * 4
