"""ImageUpscaleWithModel's tiled pass vs one untiled pass, with a real-size RRDBNet x4.

    python bench/upscale.py                       # 1024x1024 input (use a GPU: minutes per pass on a CPU)
    python bench/upscale.py --size 128 --tiles 64,32 --device cpu

The network is spandrel's ESRGAN (23 RRDB blocks, 64 features: RealESRGAN_x4plus's size) with
random weights. For each tile size it prints seconds per image, peak memory (CUDA: allocated
tensors; CPU: process RSS growth), and both as ratios against the untiled pass measured in the same
run, plus the largest pixel difference from it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def _peak_reset(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    import psutil

    return psutil.Process().memory_info().rss


def _peak(device: torch.device, start: int) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    import psutil

    return max(psutil.Process().memory_info().rss - start, 0)  # growth: a rough bound on CPU


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="input edge in pixels (default 1024)")
    parser.add_argument("--tiles", default="512,256,128", help="tile sizes to compare with untiled")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--device", default=None, help="default: cuda if present")
    args = parser.parse_args(argv)

    from spandrel.architectures.ESRGAN import ESRGAN

    from nodes.infra.files import save_safetensors
    from nodes.infra.model_manager import ModelManager
    from nodes.upscale.nodes_upscale import upscale_image
    from nodes.upscale.spandrel_models import load_upscale_model

    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp()) / "rrdbnet-x4.safetensors"
    save_safetensors(ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4).state_dict(), path)
    manager = ModelManager(device=args.device)
    model = load_upscale_model(manager, path)
    image = torch.rand(1, args.size, args.size, 3)
    print(f"RRDBNet x4 (23 blocks, 64 features), {args.size}x{args.size} -> {args.size * 4}x{args.size * 4}, "
          f"device {manager.device}, {str(manager.dtype).replace('torch.', '')}")
    upscale_image(manager, model, image[:, :64, :64], tile_size=64)  # warm-up: kernels, allocator

    def measure(tile: int) -> tuple[float, int, torch.Tensor]:
        start = _peak_reset(manager.device)
        began = time.perf_counter()
        out = upscale_image(manager, model, image, tile_size=tile, overlap=args.overlap)
        return time.perf_counter() - began, _peak(manager.device, start), out

    base_s, base_mem, reference = measure(args.size)
    print(f"{'tile':>8} {'seconds':>9} {'x untiled':>10} {'peak MiB':>9} {'x untiled':>10} {'max diff':>9}")
    print(f"{'untiled':>8} {base_s:9.2f} {1.0:10.2f} {base_mem / 2**20:9.0f} {1.0:10.2f} {0.0:9.1e}")
    for tile in (int(t) for t in args.tiles.split(",")):
        seconds, memory, out = measure(tile)
        print(f"{tile:>8} {seconds:9.2f} {seconds / base_s:10.2f} {memory / 2**20:9.0f} "
              f"{memory / max(base_mem, 1):10.2f} {(out - reference).abs().max().item():9.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
