"""Reading model files safely and building diffusers/transformers modules from state dicts.

``.safetensors`` files are read as such; pickled ``.ckpt/.pt/.pth/.bin`` files only with
``weights_only=True`` (never unpickling arbitrary objects). Modules come back as built, in
train mode with gradients; the model manager freezes them or not by their load policy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

METADATA_KEY = "nodeloom_config"  # safetensors metadata entry carrying a file's architecture (JSON)
Tensor = torch.Tensor


class ModelFileError(ValueError):
    """A model file that cannot be read or understood; the message names the file."""


def read_state_dict(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a .safetensors/.sft file, or a .ckpt/.pt/.pth/.bin loaded with
    ``weights_only=True`` (never unpickling arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = dict(handle.metadata() or {})
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # noqa: BLE001 - safetensors raises several unrelated types
            raise ModelFileError(f"cannot read {path.name}: not a valid safetensors file, it may be "
                                 f"truncated or corrupt ({type(exc).__name__}: {exc})") from exc
        return tensors, metadata
    loaded = load_pickle_weights_only(path)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelFileError(f"{path.name} holds a {type(loaded).__name__}, not a state dict")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}, {}


def load_pickle_weights_only(path: Path) -> Any:
    """A pickled .ckpt/.pt/.pth/.bin file as saved (nested dicts such as Real-ESRGAN's
    ``params_ema`` kept), loaded with ``weights_only=True``; raises ModelFileError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=False)
    except Exception as exc:  # noqa: BLE001 - includes UnpicklingError for unsafe pickles
        raise ModelFileError(f"cannot read {path.name} safely (weights-only load): {type(exc).__name__}: "
                             f"{exc}. Convert it to .safetensors.") from exc


def file_identity(path: Path) -> tuple[str, int, int]:
    """(resolved path, mtime ns, size): what makes a loaded file the same file (model manager keys,
    node fingerprints)."""
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Skip random initialisation of weights that are overwritten right away (seconds for a
    full-size UNet); buffers stay real so non-persistent ones (position ids) keep their values."""
    try:
        from accelerate import init_empty_weights
    except ImportError:  # accelerate is optional: fall back to a normal (slower) init
        yield
        return
    with init_empty_weights(include_buffers=False):
        yield


def build_module(kind: str, config: dict[str, Any], state_dict: dict[str, Tensor], *, name: str) -> torch.nn.Module:
    """Instantiate a diffusers/transformers class from a config and load ``state_dict`` strictly."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with empty_weights():
        if kind == "unet":
            module: torch.nn.Module = UNet2DConditionModel.from_config(config)
        elif kind == "vae":
            module = AutoencoderKL.from_config(config)
        else:
            te_config = CLIPTextConfig(**config)
            with_projection = "text_projection.weight" in state_dict
            module = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(te_config)
    missing, unexpected = _load(module, state_dict)
    if missing or unexpected:
        raise ModelFileError(f"{name}: the {kind} weights do not fit the architecture "
                             f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return module


def _load(module: torch.nn.Module, sd: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    # position_ids is a non-persistent buffer in current transformers; old files still carry it.
    sd.pop("text_model.embeddings.position_ids", None)
    own = module.state_dict().keys()
    if any(k.startswith("text_model.") for k in sd) and not any(k.startswith("text_model.") for k in own):
        sd = {k.removeprefix("text_model."): v for k, v in sd.items()}  # transformers 5 CLIPTextModel
    result = module.load_state_dict(sd, strict=False, assign=True)
    return list(result.missing_keys), list(result.unexpected_keys)


def save_safetensors(state: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``state`` (contiguous copies) to ``path``, creating its folder."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def read_pickle(path: Path) -> Any:
    """The object of a pickled ``.pt/.ckpt/.bin`` file loaded with ``weights_only=True`` (tensors,
    dicts, lists, strings, numbers; never arbitrary objects), for files that are not flat state
    dicts (textual-inversion embeddings). Raises ModelFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - includes UnpicklingError for unsafe pickles
        raise ModelFileError(f"cannot read {path.name} safely (weights-only load): {type(exc).__name__}. "
                             f"Convert it to .safetensors.") from exc
