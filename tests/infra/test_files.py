"""Reading model files: each tensor converted to its target dtype as it is read, only the keys
asked for, clear errors naming the file, and no more memory than the loaded weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.infra.files import ModelFileError, build_module, read_metadata, read_state_dict


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    tensors = {"a.weight": torch.randn(3, 5, dtype=torch.float16), "b.weight": torch.randn(7, dtype=torch.bfloat16),
               "c.ids": torch.arange(6).reshape(2, 3), "d.scalar": torch.tensor(2.5), "e.empty": torch.zeros(0, 4)}
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path), metadata={"k": "v"})
    return path


def test_reads_what_safetensors_reads_converted_per_key(mixed: Path) -> None:
    reference = load_file(str(mixed))
    tensors, metadata = read_state_dict(mixed, dtype=lambda key: torch.float32 if key.startswith("a") else None)
    assert metadata == {"k": "v"} and tensors.keys() == reference.keys()
    assert tensors["a.weight"].dtype == torch.float32 and torch.equal(tensors["a.weight"], reference["a.weight"].float())
    for key in ("b.weight", "c.ids", "d.scalar", "e.empty"):
        assert tensors[key].dtype == reference[key].dtype and torch.equal(tensors[key], reference[key]), key
    as_half, _ = read_state_dict(mixed, dtype=torch.float16, keep=lambda key: key != "b.weight")
    assert "b.weight" not in as_half and as_half["c.ids"].dtype == torch.int64
    assert as_half["d.scalar"].dtype == torch.float16


def test_metadata_from_the_header_only(mixed: Path) -> None:
    assert read_metadata(mixed) == {"k": "v"}
    torch.save({"a": torch.ones(1)}, mixed.with_suffix(".ckpt"))
    assert read_metadata(mixed.with_suffix(".ckpt")) == {}
    with pytest.raises(ModelFileError, match="model file not found"):
        read_metadata(mixed.with_name("nope.safetensors"))


@pytest.mark.parametrize(("damage", "why"), [
    (lambda data: data[:8] + b"{not json" + data[17:], "header is not JSON"),
    (lambda data: data[:-10], "needs bytes"),
    (lambda data: (2**40).to_bytes(8, "little") + data[8:], "header of"),
    (lambda data: data[:4], "no header"),
])
def test_damaged_files_name_the_file_and_the_reason(mixed: Path, damage, why: str) -> None:  # noqa: ANN001
    mixed.write_bytes(damage(mixed.read_bytes()))
    with pytest.raises(ModelFileError, match=rf"cannot read mixed\.safetensors: not a valid safetensors file.*{why}"):
        read_state_dict(mixed)


def test_build_module_uses_the_tensors_as_read(tmp_path: Path) -> None:
    """Tensors already in the target dtype become the parameters without a copy."""
    from diffusers import AutoencoderKL

    from nodes.diffusion.zoo.sd import TINY_VAE

    state = {k: v.to(torch.bfloat16) for k, v in AutoencoderKL(**TINY_VAE).state_dict().items()}
    vae = build_module("vae", dict(TINY_VAE), state, name="x", dtype=torch.bfloat16)
    assert all(p.data_ptr() == state[k].data_ptr() for k, p in vae.named_parameters())
    as_fp32 = build_module("vae", dict(TINY_VAE), state, name="x")
    assert {p.dtype for p in as_fp32.parameters()} == {torch.float32}


_CHILD = """
import json, sys, psutil, torch
from nodes.infra.files import read_state_dict
torch.ones(1 << 20, dtype=torch.float16).to(torch.float32)  # kernels paged in, threads up
base = psutil.Process().memory_info().rss
tensors, _ = read_state_dict(sys.argv[1], dtype=torch.float32)
# VmHWM, not ru_maxrss: after fork + exec the latter still counts the parent's pages
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"extra": peak - base, "loaded": sum(t.numel() * t.element_size() for t in tensors.values())}))
"""


def test_reading_costs_the_loaded_weights_not_the_file_on_top(tmp_path: Path) -> None:
    """A 128 MB fp16 file read as fp32 (256 MB): the peak grows by the loaded weights plus about
    one tensor, not by a memory-mapped file plus a full copy in another dtype."""
    path = tmp_path / "big.safetensors"
    save_file({f"w{i}": torch.full((1024, 4096), float(i), dtype=torch.float16) for i in range(16)}, str(path))
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).parents[2])
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["loaded"] == 256 * 2**20
    assert measured["extra"] <= 1.15 * measured["loaded"], measured


def test_bytes_that_are_no_pickle_are_not_called_code(tmp_path) -> None:
    """Only a pickle naming a global is refused as code; garbage is "not a valid checkpoint", and
    PyTorch's advice to load with weights_only=False is never passed on."""
    from nodes.infra.files import ModelFileError, read_pickle

    path = tmp_path / "x.pth"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelFileError) as info:
        read_pickle(path)
    message = str(info.value)
    assert "x.pth" in message and "not a valid PyTorch checkpoint" in message and "contains code" not in message
    assert "weights_only" not in message
