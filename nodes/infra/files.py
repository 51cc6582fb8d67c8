"""Reading model files safely and building diffusers/transformers modules from state dicts.

``.safetensors`` files are read as such; pickled ``.ckpt/.pt/.pth/.bin`` files only with
``weights_only=True`` (never unpickling arbitrary objects). Tensors are converted to their target
dtype one at a time as they are read, and modules are built with empty weights that the loaded
tensors then become (``assign=True``), so loading costs the loaded weights plus one tensor, not a
full fp32 copy. Modules come back as built, in train mode with gradients; the model manager
freezes them or not by their load policy.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

METADATA_KEY = "nodeloom_config"  # safetensors metadata entry carrying a file's architecture (JSON)
Tensor = torch.Tensor
# The dtype floating tensors are converted to, for all keys or per key (None: as stored).
DtypeRule = torch.dtype | Callable[[str], torch.dtype | None] | None

_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
                       "F8_E5M2": torch.float8_e5m2}
_MAX_HEADER = 100 * 2**20


class ModelFileError(ValueError):
    """A model file that cannot be read or understood; the message names the file."""


def read_state_dict(path: Path, *, dtype: DtypeRule = None,
                    keep: Callable[[str], bool] | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a .safetensors/.sft file, or a .ckpt/.pt/.pth/.bin loaded with
    ``weights_only=True``. Floating tensors are converted to ``dtype`` (one dtype, or a function
    of the key) as each is read; only keys ``keep`` accepts are read. Raises :class:`ModelFileError`
    naming the file when it is missing, truncated, corrupt or a pickle that holds code."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    rule = dtype if callable(dtype) else (lambda _key: dtype)
    if path.suffix.lower() in (".safetensors", ".sft"):
        return _read_safetensors(path, rule, keep or (lambda _key: True))
    tensors = _read_pickle(path)
    return {k: _cast(v, rule(k)) for k, v in tensors.items() if keep is None or keep(k)}, {}


def read_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its header only); {} for other formats."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    if path.suffix.lower() not in (".safetensors", ".sft"):
        return {}
    with open(path, "rb") as handle:
        return _safetensors_header(handle, path)[1]


def _cast(tensor: Tensor, dtype: torch.dtype | None) -> Tensor:
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype else tensor


def _corrupt(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"cannot read {path.name}: not a valid safetensors file, it may be truncated or "
                          f"corrupt ({why})")


def _safetensors_header(handle: Any, path: Path) -> tuple[dict[str, Any], dict[str, str], int]:
    """(tensor entries, metadata, offset of the data) of the safetensors format: an 8-byte
    little-endian header length, a JSON header, then the tensors' bytes."""
    raw = handle.read(8)
    if len(raw) < 8:
        raise _corrupt(path, "no header")
    length = struct.unpack("<Q", raw)[0]
    if length > _MAX_HEADER:
        raise _corrupt(path, f"header of {length} bytes")
    try:
        header = json.loads(handle.read(length))
    except ValueError as exc:
        raise _corrupt(path, f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    return header, {str(k): str(v) for k, v in metadata.items()}, 8 + length


def _read_safetensors(path: Path, rule: Callable[[str], torch.dtype | None],
                      keep: Callable[[str], bool]) -> tuple[dict[str, Tensor], dict[str, str]]:
    # Plain reads into each tensor's own buffer rather than safetensors' memory map: every mapped
    # page read stays in the process's RSS until the file is closed, which made loading cost the
    # file size on top of the loaded weights (measured: 2.0x a 1 GB fp16 file vs 1.0x this way).
    size = path.stat().st_size
    tensors: dict[str, Tensor] = {}
    staging = torch.empty(0, dtype=torch.uint8)  # reused for tensors that are converted
    with open(path, "rb", buffering=0) as handle:
        entries, metadata, start = _safetensors_header(handle, path)
        for key, entry in sorted(entries.items(), key=lambda item: item[1].get("data_offsets", [0])[0]):
            if not keep(key):
                continue
            try:
                file_dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
                shape = [int(d) for d in entry["shape"]]
                begin, end = (int(o) for o in entry["data_offsets"])
            except (KeyError, TypeError, ValueError) as exc:
                raise _corrupt(path, f"bad header entry for {key}: {exc!r}") from exc
            nbytes = math.prod(shape) * file_dtype.itemsize
            if end - begin != nbytes or start + end > size:
                raise _corrupt(path, f"{key} needs bytes {begin}..{end} of the data, the file has {size - start}")
            target = rule(key)
            converted = target is not None and file_dtype.is_floating_point and target != file_dtype
            if converted and staging.numel() < nbytes:
                staging = torch.empty(nbytes, dtype=torch.uint8)
            buffer = staging[:nbytes] if converted else torch.empty(nbytes, dtype=torch.uint8)
            handle.seek(start + begin)
            if nbytes and handle.readinto(buffer.numpy()) != nbytes:
                raise _corrupt(path, f"{key} is cut short")
            tensor = buffer.view(file_dtype).reshape(shape)
            tensors[key] = tensor.to(target) if converted else tensor
    return tensors, metadata


def _read_pickle(path: Path) -> dict[str, Tensor]:
    loaded = read_pickle(path)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelFileError(f"{path.name} holds a {type(loaded).__name__}, not a state dict")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def _pickle_error(path: Path, exc: Exception) -> ModelFileError:
    """The refusal, in our words: PyTorch's message advises loading with ``weights_only=False``,
    which would run the code the file carries, so its text is never passed on."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([^\s]+)", text)
    code = found.group(1) if found else _pickled_call(path)
    if code:
        return ModelFileError(
            f"{path.name} was refused: it is a pickle that contains code (global {code}), and loading "
            f"it would run that code. Only plain weights are loaded from .ckpt/.pt files; use a .safetensors "
            f"version of this model.")
    # The unpickler's own reason, without the advice around it.
    reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    why = reason.group(1) if reason else ("" if "weights_only" in text else text.split("\n")[0])
    return ModelFileError(f"cannot read {path.name}: not a valid PyTorch checkpoint of plain weights "
                          f"({type(exc).__name__}{': ' + why if why else ''}). A .safetensors version of the model "
                          f"loads safely.")


def _pickled_call(path: Path) -> str | None:
    """The first global a plain (non-zip) pickle would call, read from its opcodes without running
    anything; None for a zip checkpoint or bytes that are no pickle. PyTorch's weights-only loader
    names the global only for zip files; an old-format file fails on the first opcode it does not
    know."""
    import pickletools

    try:
        with open(path, "rb") as handle:
            strings: list[str] = []
            for opcode, arg, _ in pickletools.genops(handle):
                if opcode.name == "GLOBAL":
                    return str(arg).replace(" ", ".")
                if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                    strings = [*strings[-1:], str(arg)]
                if opcode.name == "STACK_GLOBAL" and len(strings) == 2:
                    return ".".join(strings)
    except Exception:  # noqa: BLE001 - not a pickle (or a zip archive): nothing to name
        return None
    return None


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


def build_module(kind: str, config: dict[str, Any], state_dict: dict[str, Tensor], *, name: str,
                 dtype: torch.dtype | None = torch.float32) -> torch.nn.Module:
    """Instantiate a diffusers/transformers class from a config with empty weights and make
    ``state_dict``'s tensors its parameters (strictly: every weight present, none left over).
    Floating tensors not already in ``dtype`` are converted one at a time (None: keep them as
    given); tensors read in the target dtype are used as they are, without a copy."""
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with empty_weights():
        # Each class imported only for the part it builds: a VAE alone needs no text encoder code.
        if kind == "unet":
            from diffusers import UNet2DConditionModel

            module: torch.nn.Module = UNet2DConditionModel.from_config(config)
        elif kind == "vae":
            from diffusers import AutoencoderKL

            module = AutoencoderKL.from_config(config)
        else:
            from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

            te_config = CLIPTextConfig(**config)
            with_projection = "text_projection.weight" in state_dict
            module = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(te_config)
    missing, unexpected = _load(module, state_dict, dtype)
    if missing or unexpected:
        raise ModelFileError(f"{name}: the {kind} weights do not fit the architecture "
                             f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return module


def _load(module: torch.nn.Module, sd: dict[str, Tensor], dtype: torch.dtype | None) -> tuple[list[str], list[str]]:
    sd = {k: _cast(v, dtype) for k, v in sd.items()}
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
    """The object of a pickled ``.ckpt/.pt/.pth/.bin`` file as saved (nested dicts such as
    Real-ESRGAN's ``params_ema``, textual-inversion dicts), loaded with ``weights_only=True``:
    tensors, dicts, lists, strings, numbers, never arbitrary objects. Raises ModelFileError naming
    the file (a pickle carrying code is refused without loading it)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:  # noqa: BLE001 - includes UnpicklingError for unsafe pickles
        raise _pickle_error(path, exc) from None


def read_yaml(path: Path) -> Any:
    """A YAML file people write by hand (sidecar model configs). Raises ModelFileError naming the
    file and, for a syntax error, the parser's problem with its line and column (not its
    multi-line excerpt)."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelFileError(f"cannot read the sidecar config {Path(path).name}: {_yaml_reason(exc)}") from exc


def _yaml_reason(exc: Exception) -> str:
    """One line: the parser's problem and where, not its multi-line excerpt of the file."""
    mark = getattr(exc, "problem_mark", None)
    if getattr(exc, "problem", None) and mark is not None:
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc) or type(exc).__name__
