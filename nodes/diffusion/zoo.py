"""The tiny model zoo: small random-weight models with real architectures and real file formats.

No weights can be downloaded where NodeLoom is tested, so ``nodeloom models tiny`` writes,
deterministically from a seed, everything the node families need into a models root:

    checkpoints/tiny-sd15.safetensors, tiny-sdxl.safetensors   single files, original key layout
    diffusers/tiny-sd15/, diffusers/tiny-sdxl/                 the same weights as diffusers folders
    vae/tiny-vae.safetensors                                   an SD-layout VAE (other weights)
    loras/tiny-sd15-kohya.safetensors, tiny-sd15-diffusers.safetensors
    clip_tokenizer/tiny-clip/                                  the small BPE vocabulary they share
    controlnet/tiny-controlnet-sd15.safetensors, upscale_models/tiny-esrgan-x4.safetensors,
    sams/tiny-sam.safetensors, scorers/tiny-clip-scorer/, clip_vision/tiny-clip-vision.safetensors

Single files carry their architecture in the ``nodeloom_config`` metadata entry, so loading needs
no guessing; each file is at most a few MB and the whole zoo takes seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion import ldm_keys
from nodes.diffusion.checkpoint import METADATA_KEY, shipped_config
from nodes.diffusion.tokenizer import TINY_TOKENIZER, tiny_vocab, write_tokenizer

TINY_VOCAB = len(tiny_vocab()[0])
_BOS, _EOS = TINY_VOCAB - 2, TINY_VOCAB - 1


def tiny_text_config(*, projection: bool, act: str) -> dict[str, Any]:
    return {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
            "max_position_embeddings": 77, "vocab_size": TINY_VOCAB, "hidden_act": act,
            "projection_dim": 32, "bos_token_id": _BOS, "eos_token_id": _EOS, "pad_token_id": _EOS,
            "layer_norm_eps": 1e-5, "model_type": "clip_text_model",
            "architectures": ["CLIPTextModelWithProjection" if projection else "CLIPTextModel"]}


TINY_VAE: dict[str, Any] = {
    "act_fn": "silu", "block_out_channels": [32, 32, 32, 32], "in_channels": 3, "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 32, "sample_size": 64}

TINY_SD15_UNET: dict[str, Any] = {
    "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "in_channels": 4, "out_channels": 4, "norm_num_groups": 32, "sample_size": 8}

TINY_SDXL_UNET: dict[str, Any] = {
    "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 64, "attention_head_dim": [2, 4],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2], "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 32,
    "in_channels": 4, "out_channels": 4, "norm_num_groups": 32, "sample_size": 8}


def write_tiny_zoo(root: Path, *, seed: int = 0) -> list[Path]:
    """Write the whole zoo under ``root`` (a models root); returns the paths written."""
    root = Path(root)
    written: list[Path] = []
    tokenizer_dir = root / "clip_tokenizer" / TINY_TOKENIZER
    write_tokenizer(tokenizer_dir)
    written.append(tokenizer_dir)
    sd15 = _tiny_sd15(seed)
    written += _save_family(root, "tiny-sd15", sd15, tokenizer_dir)
    sdxl = _tiny_sdxl(seed + 1)
    written += _save_family(root, "tiny-sdxl", sdxl, tokenizer_dir)
    written.append(_save_vae(root, seed + 2))
    written += _save_loras(root, sd15, seed + 3)
    builders: list[Callable[[Path, int], Path | None]] = [
        lambda r, s: _save_controlnet(r, sd15, s), _save_esrgan, _save_sam, _save_clip_scorer, _save_clip_vision]
    for offset, builder in enumerate(builders):
        path = builder(root, seed + 10 + offset)
        if path is not None:
            written.append(path)
    return written


# -- SD-style checkpoints -----------------------------------------------------------------------

def _tiny_sd15(seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    te_cfg = tiny_text_config(projection=False, act="quick_gelu")
    vae_cfg = dict(TINY_VAE, scaling_factor=0.18215)
    return {"family": "sd15", "unet": UNet2DConditionModel(**TINY_SD15_UNET), "vae": AutoencoderKL(**vae_cfg),
            "text_encoders": [CLIPTextModel(CLIPTextConfig(**te_cfg))], "te_configs": [te_cfg]}


def _tiny_sdxl(seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    te1 = tiny_text_config(projection=False, act="quick_gelu")
    te2 = tiny_text_config(projection=True, act="gelu")
    vae_cfg = dict(TINY_VAE, scaling_factor=0.13025)
    return {"family": "sdxl", "unet": UNet2DConditionModel(**TINY_SDXL_UNET), "vae": AutoencoderKL(**vae_cfg),
            "text_encoders": [CLIPTextModel(CLIPTextConfig(**te1)), CLIPTextModelWithProjection(CLIPTextConfig(**te2))],
            "te_configs": [te1, te2]}


def _spec(models: dict[str, Any]) -> dict[str, Any]:
    family = models["family"]
    base = shipped_config(family)
    spec = {"family": family, "unet": _plain_config(models["unet"]), "vae": _plain_config(models["vae"]),
            "scheduler": base["scheduler"], "tokenizer_name": TINY_TOKENIZER}
    for key, cfg in zip(("text_encoder", "text_encoder_2"), models["te_configs"]):
        spec[key] = cfg
    for key in ("tokenizer", "tokenizer_2", "force_zeros_for_empty_prompt"):
        if key in base:
            spec[key] = base[key]
    return spec


def _plain_config(module: Any) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in dict(module.config).items() if not k.startswith("_")}))


def _save_family(root: Path, name: str, models: dict[str, Any], tokenizer_dir: Path) -> list[Path]:
    spec = _spec(models)
    unet, vae, tes = models["unet"], models["vae"], models["text_encoders"]
    state = ldm_keys.prefixed(ldm_keys.unet_to_ldm(unet.state_dict(), spec["unet"]), ldm_keys.UNET_PREFIX)
    state.update(ldm_keys.prefixed(ldm_keys.vae_to_ldm(vae.state_dict(), spec["vae"]), ldm_keys.VAE_PREFIX))
    if models["family"] == "sdxl":
        state.update(ldm_keys.prefixed(_hf_te_state(tes[0]), ldm_keys.SDXL_CLIP_L_PREFIX))
        state.update(ldm_keys.prefixed(ldm_keys.openclip_from_hf(_hf_te_state(tes[1])), ldm_keys.SDXL_OPENCLIP_PREFIX))
    else:
        state.update(ldm_keys.prefixed(_hf_te_state(tes[0]), ldm_keys.SD1_CLIP_PREFIX))
    single = root / "checkpoints" / f"{name}.safetensors"
    _save_safetensors(state, single, {METADATA_KEY: json.dumps(spec)})
    folder = root / "diffusers" / name
    _save_pipeline_folder(folder, models, spec, tokenizer_dir)
    return [single, folder]


def _text_model_name(name: str) -> str:
    """The classic ``text_model.``-prefixed name real files use (transformers 5 dropped the
    prefix from CLIPTextModel's own module names)."""
    return name if name.startswith(("text_model.", "text_projection")) else "text_model." + name


def _hf_te_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {_text_model_name(k): v for k, v in encoder.state_dict().items()}


def _save_pipeline_folder(folder: Path, models: dict[str, Any], spec: dict[str, Any], tokenizer_dir: Path) -> None:
    from diffusers import EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from nodes.diffusion.tokenizer import load_tokenizer

    if folder.exists():
        shutil.rmtree(folder)
    scheduler_cls = EulerDiscreteScheduler if models["family"] == "sdxl" else PNDMScheduler
    scheduler = scheduler_cls.from_config(spec["scheduler"])
    tok = load_tokenizer(str(tokenizer_dir), spec["tokenizer"]["pad_token"])
    if models["family"] == "sdxl":
        tok2 = load_tokenizer(str(tokenizer_dir), spec["tokenizer_2"]["pad_token"])
        pipe = StableDiffusionXLPipeline(vae=models["vae"], text_encoder=models["text_encoders"][0],
                                         text_encoder_2=models["text_encoders"][1], tokenizer=tok, tokenizer_2=tok2,
                                         unet=models["unet"], scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=models["vae"], text_encoder=models["text_encoders"][0], tokenizer=tok,
                                       unet=models["unet"], scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)


def _save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def _save_vae(root: Path, seed: int) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**dict(TINY_VAE, scaling_factor=0.18215))
    config = _plain_config(vae)
    state = ldm_keys.vae_to_ldm(vae.state_dict(), config)
    return _save_safetensors(state, root / "vae" / "tiny-vae.safetensors", {METADATA_KEY: json.dumps({"vae": config})})


# -- LoRAs --------------------------------------------------------------------------------------

def _lora_weights(module: torch.nn.Module, targets: tuple[str, ...], rank: int, gen: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random (down, up) pairs for every Linear whose name ends with one of ``targets``."""
    pairs = {}
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear) and name.endswith(targets):
            down = torch.randn(rank, sub.in_features, generator=gen) * 0.2
            up = torch.randn(sub.out_features, rank, generator=gen) * 0.2
            pairs[name] = (down, up)
    return pairs


def _save_loras(root: Path, sd15: dict[str, Any], seed: int) -> list[Path]:
    gen = torch.Generator().manual_seed(seed)
    rank = 4
    unet_pairs = _lora_weights(sd15["unet"], ("to_q", "to_k", "to_v", "to_out.0"), rank, gen)
    te_pairs = {_text_model_name(k): v for k, v in
                _lora_weights(sd15["text_encoders"][0], ("q_proj", "k_proj", "v_proj", "out_proj"), rank, gen).items()}
    # diffusers/peft layout: no alpha stored, so alpha = rank (scale 1).
    diffusers_state = {}
    for prefix, pairs in (("unet", unet_pairs), ("text_encoder", te_pairs)):
        for name, (down, up) in pairs.items():
            diffusers_state[f"{prefix}.{name}.lora_A.weight"] = down
            diffusers_state[f"{prefix}.{name}.lora_B.weight"] = up
    out = [_save_safetensors(diffusers_state, root / "loras" / "tiny-sd15-diffusers.safetensors")]
    # kohya layout (SD1.x names follow the diffusers modules, dots -> underscores), alpha 2 of 4.
    kohya_state = {}
    gen2 = torch.Generator().manual_seed(seed + 1)
    for prefix, pairs in (("lora_unet_", unet_pairs), ("lora_te_", te_pairs)):
        for name, (down, up) in pairs.items():
            key = prefix + name.replace(".", "_")
            kohya_state[f"{key}.lora_down.weight"] = torch.randn(down.shape, generator=gen2) * 0.2
            kohya_state[f"{key}.lora_up.weight"] = torch.randn(up.shape, generator=gen2) * 0.2
            kohya_state[f"{key}.alpha"] = torch.tensor(2.0)
    out.append(_save_safetensors(kohya_state, root / "loras" / "tiny-sd15-kohya.safetensors",
                                 {"ss_network_module": "networks.lora", "ss_network_dim": str(rank),
                                  "ss_network_alpha": "2.0"}))
    return out


# -- the other families' models -----------------------------------------------------------------

def _save_controlnet(root: Path, sd15: dict[str, Any], seed: int) -> Path:
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(sd15["unet"], conditioning_embedding_out_channels=(8, 8, 16, 16))
    # from_unet zero-initialises the output convolutions; a random net should visibly act.
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                param.normal_(0.0, 0.05)
    config = _plain_config(net)
    return _save_safetensors(net.state_dict(), root / "controlnet" / "tiny-controlnet-sd15.safetensors",
                             {METADATA_KEY: json.dumps({"controlnet": config, "family": "sd15"})})


def _save_esrgan(root: Path, seed: int) -> Path:
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    return _save_safetensors(net.state_dict(), root / "upscale_models" / "tiny-esrgan-x4.safetensors")


TINY_SAM: dict[str, Any] = {"img_size": 64, "patch_size": 16, "encoder_embed_dim": 32, "encoder_depth": 1,
                            "encoder_num_heads": 2, "window_size": 2, "global_attn_indexes": [0],
                            "prompt_embed_dim": 16, "decoder_depth": 2, "decoder_mlp_dim": 32, "decoder_num_heads": 2}


def build_sam(config: dict[str, Any]) -> torch.nn.Module:
    """A segment-anything ``Sam`` of any size (the registry only builds the published three)."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embed = config["prompt_embed_dim"]
    grid = config["img_size"] // config["patch_size"]
    encoder = ImageEncoderViT(
        depth=config["encoder_depth"], embed_dim=config["encoder_embed_dim"], img_size=config["img_size"],
        mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=config["encoder_num_heads"],
        patch_size=config["patch_size"], qkv_bias=True, use_rel_pos=True,
        global_attn_indexes=tuple(config["global_attn_indexes"]), window_size=config["window_size"], out_chans=embed)
    prompt = PromptEncoder(embed_dim=embed, image_embedding_size=(grid, grid),
                           input_image_size=(config["img_size"], config["img_size"]), mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=embed, iou_head_depth=3, iou_head_hidden_dim=32,
                          transformer=TwoWayTransformer(depth=config["decoder_depth"], embedding_dim=embed,
                                                        mlp_dim=config["decoder_mlp_dim"],
                                                        num_heads=config["decoder_num_heads"]))
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


def _save_sam(root: Path, seed: int) -> Path | None:
    try:
        import segment_anything  # noqa: F401
    except ImportError:  # optional dependency: the SAM nodes say so when used
        return None
    torch.manual_seed(seed)
    sam = build_sam(TINY_SAM)
    return _save_safetensors(sam.state_dict(), root / "sams" / "tiny-sam.safetensors",
                             {METADATA_KEY: json.dumps({"sam": TINY_SAM})})


def _tiny_clip_model(seed: int) -> Any:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    text = tiny_text_config(projection=False, act="quick_gelu")
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
              "image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu", "projection_dim": 16}
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))


def _save_clip_scorer(root: Path, seed: int) -> Path:
    """A CLIPModel folder (PickScore-shaped: from_pretrained + a processor), for scorer nodes."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    from nodes.diffusion.tokenizer import load_tokenizer

    folder = root / "scorers" / "tiny-clip-scorer"
    model = _tiny_clip_model(seed)
    model.save_pretrained(folder, safe_serialization=True)
    tok_dir = root / "clip_tokenizer" / TINY_TOKENIZER
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                              tokenizer=load_tokenizer(str(tok_dir)))
    processor.save_pretrained(folder)
    return folder


def _save_clip_vision(root: Path, seed: int) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                              image_size=32, patch_size=8, projection_dim=16)
    model = CLIPVisionModelWithProjection(config)
    return _save_safetensors(model.state_dict(), root / "clip_vision" / "tiny-clip-vision.safetensors",
                             {METADATA_KEY: json.dumps({"clip_vision": config.to_dict()})})


# -- command line -------------------------------------------------------------------------------

def write_example_inputs(input_dir: Path, *, seed: int = 0) -> list[Path]:
    """The images the example workflows load: ``nodeloom_example.png`` (img2img) and
    ``nodeloom_inpaint.png``, whose transparent square is the area to inpaint (LoadImage's mask)."""
    import numpy as np
    from PIL import Image

    input_dir.mkdir(parents=True, exist_ok=True)
    rgb = (np.random.default_rng(seed).random((64, 64, 3)) * 255).astype(np.uint8)
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[16:48, 16:48] = 0
    example, inpaint = input_dir / "nodeloom_example.png", input_dir / "nodeloom_inpaint.png"
    Image.fromarray(rgb).save(example)
    Image.fromarray(np.dstack([rgb, alpha])).save(inpaint)
    return [example, inpaint]


def main(argv: list[str]) -> int:
    """``nodeloom models tiny [--root DIR] [--seed N] [--inputs DIR]``."""
    parser = argparse.ArgumentParser(prog="nodeloom models", description="Model utilities.")
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("tiny", help="write the tiny random-weight model zoo (no downloads)")
    tiny.add_argument("--root", type=Path, default=Path("models"), help="models root (default ./models)")
    tiny.add_argument("--seed", type=int, default=0, help="seed the weights derive from (default 0)")
    tiny.add_argument("--inputs", type=Path, default=Path("input"),
                      help="where to write the example workflows' input images (default ./input)")
    args = parser.parse_args(argv)
    import time

    started = time.perf_counter()
    paths = write_tiny_zoo(args.root, seed=args.seed) + write_example_inputs(args.inputs, seed=args.seed)
    for path in paths:
        print(path)
    print(f"tiny zoo: {len(paths)} files written to {args.root} in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
