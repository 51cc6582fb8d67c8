"""4-step SLAM (SLAMSampler, cfg 1, an LCM/SLAM LoRA) vs 25-step Euler (KSampler, cfg 7) on the same
model and size, each end to end through the graph (checkpoint, LoRA, text encode, sampler, VAE
decode, save) in one process.

    python bench/slam.py                         # small SD1.5-style UNet at 256x256, CPU ok
    python bench/slam.py --size tiny             # the tiny zoo model at 64x64 (seconds)
    python bench/slam.py --size sd15 --height 512 --width 512     # the published UNet size (use a GPU)

Prints, per path, the whole graph's time and its parts from the executor's events: the sampler node
(the UNet-dominated part; it also applies the LoRA), text encoding and VAE decoding (fixed costs
both paths pay). Target: Euler/SLAM >= 5.5 on the sampler part (25 CFG steps are 50 UNet rows,
4 SLAM steps are 4).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "slam_txt2img.json"
SMALL_UNET = {"block_out_channels": [96, 192, 384], "layers_per_block": 2, "attention_head_dim": 8,
              "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
              "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}


def _checkpoint(root: Path, size: str) -> tuple[str, str]:
    """(checkpoint, LoRA) names: the tiny zoo's, or the tiny SD1.5 with a bigger random UNet and an
    LCM-style LoRA fitted to it (same module targets and layout as the zoo's)."""
    if size == "tiny":
        return "tiny-sd15.safetensors", "tiny-lcm-lora-sd15.safetensors"
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from nodes.diffusion.families import SD15
    from nodes.diffusion.zoo.lcm import RANK, lora_pairs
    from nodes.infra import ldm_keys
    from nodes.infra.files import METADATA_KEY, read_state_dict, save_safetensors

    tensors, meta = read_state_dict(root / "checkpoints" / "tiny-sd15.safetensors")
    spec = json.loads(meta[METADATA_KEY])
    unet_cfg = dict(SD15.shipped_config()["unet"]) if size == "sd15" else {**spec["unet"], **SMALL_UNET}
    unet_cfg["cross_attention_dim"] = spec["text_encoder"]["hidden_size"]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_cfg)
    spec["unet"] = json.loads(json.dumps({k: v for k, v in dict(unet.config).items() if not k.startswith("_")}))
    tensors = {k: v for k, v in tensors.items() if not k.startswith(ldm_keys.UNET_PREFIX)}
    tensors.update(ldm_keys.prefixed(ldm_keys.unet_to_ldm(unet.state_dict(), spec["unet"]), ldm_keys.UNET_PREFIX))
    name = f"bench-slam-{size}"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(root / "checkpoints" / f"{name}.safetensors"),
              metadata={METADATA_KEY: json.dumps(spec)})
    lora: dict[str, torch.Tensor] = {}
    for module, (down, up) in lora_pairs(unet, torch.Generator().manual_seed(1)).items():
        key = "lora_unet_" + module.replace(".", "_")
        lora.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(RANK / 2)})
    save_safetensors(lora, root / "loras" / f"{name}-lora.safetensors")
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    print(f"UNet: {params:.0f}M parameters, blocks {unet_cfg['block_out_channels']}")
    return f"{name}.safetensors", f"{name}-lora.safetensors"


def _prompts(ckpt: str, lora: str, steps: int, height: int, width: int) -> dict[str, dict[str, Any]]:
    slam = json.loads(WORKFLOW.read_text())
    slam["4"]["inputs"]["ckpt_name"] = ckpt
    slam["10"]["inputs"]["lora_name"] = lora
    slam["5"]["inputs"].update(width=width, height=height)
    euler = json.loads(json.dumps(slam))
    euler["3"] = {"class_type": "KSampler", "inputs": {
        "seed": 42, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    for node in ("6", "7"):  # the plain model's own text encoder
        euler[node]["inputs"]["clip"] = ["4", 1]
    return {"slam 4 steps, cfg 1 ": slam, f"euler {steps} steps, cfg 7": euler}


def _timed_run(registry: Any, folders: Any, services: Any, prompt: dict[str, Any]) -> dict[str, float]:
    """Seconds per node class of one uncached run (a fresh output cache; loaded models stay)."""
    from graph_runtime.events import ExecutionSuccess, Executing
    from graph_runtime.executor import Runtime

    marks: list[tuple[str, float]] = []

    def listen(event: Any) -> None:
        if isinstance(event, Executing | ExecutionSuccess):
            marks.append((getattr(event, "class_type", ""), time.perf_counter()))

    started = time.perf_counter()
    result = Runtime(registry, folders=folders, services=services).execute(prompt, listeners=[listen])
    assert result.status == "success", result.error
    parts: dict[str, float] = defaultdict(float)
    for (kind, begin), (_, end) in zip(marks, marks[1:]):
        parts[kind] += end - begin
    parts["total"] = time.perf_counter() - started
    return parts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "small", "sd15"], default="small")
    parser.add_argument("--euler-steps", type=int, default=25)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help="models root holding the tiny zoo")
    args = parser.parse_args(argv)

    from graph_runtime.context import Services
    from graph_runtime.folders import FolderPaths
    from graph_runtime.registry import load_registry
    from nodes.diffusion.zoo import tiny_zoo_at

    root = tiny_zoo_at(args.root)
    ckpt, lora = _checkpoint(root, args.size)
    side = {"tiny": 64, "small": 256, "sd15": 512}[args.size]
    height, width = args.height or side, args.width or side
    folders = FolderPaths(base=root.parent, models_roots=[root])
    registry = load_registry(builtins=("nodes.core", "nodes.diffusion", "nodes.slam"), entry_points=False)
    services = Services()
    prompts = _prompts(ckpt, lora, args.euler_steps, height, width)
    for prompt in prompts.values():  # warm-up: loads the models, fills allocator pools
        _timed_run(registry, folders, services, prompt)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in prompts}
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        for name, prompt in prompts.items():
            runs[name].append(_timed_run(registry, folders, services, prompt))

    def med(name: str, part: str) -> float:
        return statistics.median(r.get(part, 0.0) for r in runs[name])

    print(f"{ckpt} {width}x{height}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'path':<24} {'total':>8} {'sampler':>8} {'encode':>8} {'decode':>8} {'other':>8}")
    for name in prompts:
        sampler = med(name, "SLAMSampler") + med(name, "KSampler")
        encode, decode, total = med(name, "CLIPTextEncode"), med(name, "VAEDecode"), med(name, "total")
        print(f"{name:<24} {total:8.3f} {sampler:8.3f} {encode:8.3f} {decode:8.3f} "
              f"{total - sampler - encode - decode:8.3f}")
    slam_name, euler_name = list(prompts)
    ratio = (med(euler_name, "KSampler")) / med(slam_name, "SLAMSampler")
    print(f"sampler ratio euler/slam = {ratio:.2f} (target >= 5.5); "
          f"end to end = {med(euler_name, 'total') / med(slam_name, 'total'):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
