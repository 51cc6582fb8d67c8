"""Where a trained LoRA is written: the name a user types is the name LoraLoader lists."""

from __future__ import annotations

from pathlib import Path

from nodes.training.lora_files import LoraTarget


def test_a_name_given_with_its_extension_is_not_doubled(tmp_path: Path) -> None:
    target = LoraTarget(tmp_path, " product.safetensors ")
    assert target.kohya == tmp_path / "product.safetensors"
    assert target.diffusers_dir == tmp_path / "product_diffusers"
    assert LoraTarget(tmp_path, "product").kohya == target.kohya


def test_alpha_zero_means_alpha_equals_rank_as_kohya_reads_it() -> None:
    from dataclasses import replace

    from nodes.training.lora_recipe import LoraOptions

    options = LoraOptions(rank=8, alpha=0.0, target_modules=("to_q",), train_text_encoder=False, batch_size=1,
                          noise_offset=0.0, min_snr_gamma=0.0, gradient_checkpointing=False, sample_prompt="",
                          seed=0, precision="fp32")
    assert options.effective_alpha == 8.0
    assert replace(options, alpha=4.0).effective_alpha == 4.0
