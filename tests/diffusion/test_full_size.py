"""Published-size checkpoints in the original key layout: every key mapped (on meta tensors, in
the default run) and, in slow tests, a full-size file written tensor by tensor and loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nodes.diffusion import checkpoint
from nodes.diffusion.families import family
from nodes.diffusion.zoo.full_size import full_size_layout, write_full_size_checkpoint

# Keys of the published single files (v1-5-pruned-emaonly, v2-1_768-ema-pruned, sd_xl_base_1.0).
PUBLISHED_KEYS = {"sd15": 1131, "sd21": 1227, "sdxl": 2515}


@pytest.mark.parametrize("name", sorted(PUBLISHED_KEYS))
def test_every_key_of_a_published_size_file_is_mapped(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = full_size_layout(name)
    assert len(layout) == PUBLISHED_KEYS[name]
    monkeypatch.setattr(checkpoint, "read_state_dict", lambda *a, **k: (layout, {}))
    monkeypatch.setattr(checkpoint, "read_metadata", lambda *a: {})
    comp = checkpoint.load_checkpoint(Path(f"{name}.safetensors"), tokenizer_root=lambda n: Path(n),
                                      dtypes={"unet": torch.float16})
    assert comp.family == name
    shipped = family(name).shipped_config()
    for key in ("block_out_channels", "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim"):
        if key in shipped["unet"]:
            assert comp.unet.config[key] == shipped["unet"][key] or list(comp.unet.config[key]) == shipped["unet"][key], key
    modules = [comp.unet, comp.vae, *comp.text_encoders]
    assert all(p.device.type == "meta" for m in modules for p in m.parameters())  # assigned, nothing left empty
    assert {p.dtype for p in comp.unet.parameters()} == {torch.float16}
    expected_params = sum(v.numel() for k, v in layout.items() if v.is_floating_point() and "logit_scale" not in k)
    # SD2 conditions on the penultimate layer: diffusers' encoder leaves the file's last block out.
    drops = any(te.drop_last_block for te in family(name).text_encoders)
    dropped = sum(v.numel() for k, v in layout.items() if ".resblocks.23." in k) if drops else 0
    assert sum(p.numel() for m in modules for p in m.parameters()) == expected_params - dropped


_LOAD = """
import json, sys, psutil, torch
from nodes.diffusion.checkpoint import load_checkpoint
from nodes.infra.model_manager import module_bytes
torch.ones(1 << 20, dtype=torch.float16).to(torch.float32)
base = psutil.Process().memory_info().rss
dtypes = {"unet": torch.float16, "text_encoder": torch.float16, "vae": torch.float32}
comp = load_checkpoint(sys.argv[1], tokenizer_root=lambda n: n, dtypes=dtypes)
# VmHWM, not ru_maxrss: after fork + exec the latter still counts the parent's pages
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
loaded = sum(module_bytes(m) for m in [comp.unet, comp.vae, *comp.text_encoders])
print(json.dumps({"extra": peak - base, "loaded": loaded, "family": comp.family}))
"""


@pytest.mark.slow
def test_full_size_sd15_file_loads_within_its_weights(tmp_path: Path) -> None:
    """2.1 GB written with about one tensor in memory; loading it in fp16 costs the loaded
    weights (VAE in fp32) plus a few tensors, not the file again or an fp32 copy."""
    path = write_full_size_checkpoint(tmp_path / "sd15.safetensors", "sd15")
    assert 2.0e9 < path.stat().st_size < 2.3e9
    out = subprocess.run([sys.executable, "-c", _LOAD, str(path)], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).parents[2])
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["family"] == "sd15"
    assert measured["extra"] <= 1.3 * measured["loaded"], measured
