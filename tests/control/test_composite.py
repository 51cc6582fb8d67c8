"""ProductComposite: the product (mask 0) is the input bit for bit; the rest is the generated image."""

from __future__ import annotations

import pytest
import torch

from nodes.control.composite import ProductComposite, product_composite


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    generated, original = torch.rand(1, 40, 56, 3, generator=gen), torch.rand(1, 40, 56, 3, generator=gen)
    product = torch.zeros(1, 40, 56)
    product[:, 10:30, 15:40] = 1.0
    return generated, original, product


@pytest.mark.parametrize("feather", [0, 6])
def test_product_is_bit_identical_and_background_generated(make_ctx, feather: int) -> None:
    generated, original, product = _inputs()
    out = ProductComposite().run(make_ctx(), generated=generated, original=original, mask=product, invert_mask=True,
                                 feather=feather)[0]
    keep = product.bool()[..., None].expand_as(out)
    assert (out[keep] - original[keep]).abs().max() == 0
    far = torch.ones_like(product, dtype=torch.bool)
    far[:, max(0, 10 - 3 * feather):30 + 3 * feather, max(0, 15 - 3 * feather):40 + 3 * feather] = False
    far = far[..., None].expand_as(out)
    assert torch.equal(out[far], generated[far])


def test_feather_blends_only_on_the_generated_side(make_ctx) -> None:
    generated, original, product = _inputs()
    out = ProductComposite().run(make_ctx(), generated=generated, original=original, mask=1.0 - product,
                                 invert_mask=False, feather=4)[0]
    seam = out[0, 31, 20]  # one pixel outside the product: partly original
    assert not torch.equal(seam, generated[0, 31, 20]) and not torch.equal(seam, original[0, 31, 20])


def test_size_mismatch_names_both_sizes(make_ctx) -> None:
    generated, original, product = _inputs()
    with pytest.raises(ValueError, match=r"\(64, 64\).*\(56, 40\)"):
        ProductComposite().run(make_ctx(), generated=torch.rand(1, 64, 64, 3), original=original, mask=product,
                               invert_mask=True, feather=0)


def test_without_feather_it_is_image_composite_masked(make_ctx) -> None:
    from nodes.core.image import ImageCompositeMasked

    generated, original, product = _inputs()
    ours = ProductComposite().run(make_ctx(), generated=generated, original=original, mask=product, invert_mask=True,
                                  feather=0)[0]
    comfy = ImageCompositeMasked().run(make_ctx(), destination=generated, source=original, x=0, y=0,
                                       resize_source=False, mask=product)[0]
    assert torch.equal(ours, comfy)


@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (16,), (0, 16, 16)])
def test_a_mask_of_another_shape_is_refused_with_its_shape(shape) -> None:
    image = torch.rand(2, 16, 16, 3)
    with pytest.raises(ValueError, match=r"mask must be \[H, W\] or \[B, H, W\]"):
        product_composite(image, image, torch.ones(shape))
