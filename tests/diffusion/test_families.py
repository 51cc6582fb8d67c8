"""FamilySpec lookups and the places that read them."""

from __future__ import annotations

import pytest

from nodes.diffusion.families import DEFAULT_FAMILY, FAMILIES, SD21, SDXL, family, family_of_keys
from nodes.infra import ldm_keys


def test_lookup_by_name_and_alias() -> None:
    assert family("sdxl") is SDXL
    assert family("sd2") is SD21 and family("sd21") is SD21
    with pytest.raises(ValueError, match=r"unknown model family 'flux'.*sd15"):
        family("flux")


def test_spec_values() -> None:
    assert SDXL.latent_shape(2, 1024, 768) == (2, 4, 128, 96)
    assert [te.part for te in SDXL.text_encoders] == ["text_encoder", "text_encoder_2"]
    assert SDXL.size_conditioning and not DEFAULT_FAMILY.size_conditioning
    assert SD21.prediction_type == "v_prediction" and family("sd15").prediction_type == "epsilon"
    assert SDXL.scheduler_defaults["_class_name"] == "EulerDiscreteScheduler"
    assert {f.default_resolution for f in FAMILIES.values()} == {32, 512, 768, 1024}
    assert len(SDXL.latent_rgb) == SDXL.latent_channels


def test_family_from_single_file_keys() -> None:
    def keys(*prefixes: str) -> set[str]:
        return {p + "token_embedding.weight" for p in prefixes}

    assert family_of_keys(keys(ldm_keys.SD1_CLIP_PREFIX)).name == "sd15"
    assert family_of_keys(keys(ldm_keys.SD2_OPENCLIP_PREFIX)).name == "sd21"
    assert family_of_keys(keys(ldm_keys.SDXL_CLIP_L_PREFIX, ldm_keys.SDXL_OPENCLIP_PREFIX)).name == "sdxl"
    assert family_of_keys(keys(ldm_keys.SDXL_OPENCLIP_PREFIX)) is None  # a refiner: no CLIP-L


def test_empty_latent_follows_the_default_family(make_ctx) -> None:
    from nodes.diffusion.nodes_latent import EmptyLatentImage

    latent = EmptyLatentImage().run(make_ctx(), width=96, height=64, batch_size=3)[0]["samples"]
    assert tuple(latent.shape) == DEFAULT_FAMILY.latent_shape(3, 64, 96) == (3, 4, 8, 12)


def test_loaded_models_carry_their_family(make_ctx) -> None:
    from diffusion_helpers import load

    model, clip, _ = load(make_ctx(), "tiny-sdxl.safetensors")
    assert model.spec is SDXL and clip.family == "sdxl" and len(clip.refs) == 2
