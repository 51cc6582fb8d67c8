"""Where files live: the models folders (ComfyUI's layout), input, output, temp and user data.

Model files are looked up in every models root in order (the main root first, then the extra roots
of an ``extra_model_paths.yaml``), so users can point us at the folders they already have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MODEL_EXTENSIONS: tuple[str, ...] = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".onnx")

# ComfyUI's sub-folders plus our own (face_detectors, scorers, clip_tokenizer, inception, aesthetic).
MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": MODEL_EXTENSIONS + (".yaml",),
    "diffusers": (),  # folders holding a model_index.json
    "loras": MODEL_EXTENSIONS,
    "vae": MODEL_EXTENSIONS,
    "vae_approx": MODEL_EXTENSIONS,
    "clip": MODEL_EXTENSIONS,
    "text_encoders": MODEL_EXTENSIONS,
    "unet": MODEL_EXTENSIONS,
    "diffusion_models": MODEL_EXTENSIONS,
    "controlnet": MODEL_EXTENSIONS,
    "upscale_models": MODEL_EXTENSIONS,
    "sams": MODEL_EXTENSIONS,
    "clip_vision": MODEL_EXTENSIONS,
    "embeddings": MODEL_EXTENSIONS,
    "hypernetworks": MODEL_EXTENSIONS,
    "style_models": MODEL_EXTENSIONS,
    "gligen": MODEL_EXTENSIONS,
    "photomaker": MODEL_EXTENSIONS,
    "face_detectors": MODEL_EXTENSIONS + (".xml",),
    "scorers": MODEL_EXTENSIONS + (".json",),
    "inception": MODEL_EXTENSIONS,  # FID's Inception v3 (torch-fidelity's weights file)
    "aesthetic": MODEL_EXTENSIONS,  # LAION's improved aesthetic predictor MLPs
    "clip_tokenizer": (),  # folders holding vocab.json + merges.txt
}

# Folders whose models are folders, each found by a marker file inside it.
DIRECTORY_MARKERS: dict[str, tuple[str, ...]] = {"diffusers": ("model_index.json", "vocab.json"),
                                                 "clip_tokenizer": ("model_index.json", "vocab.json"),
                                                 "scorers": ("config.json",)}
DIRECTORY_FOLDERS = frozenset(DIRECTORY_MARKERS)
# Folders holding model files and model folders (a diffusers/transformers folder with this marker
# is one model; the files inside it are not listed on their own).
MIXED_MARKERS: dict[str, str] = {"controlnet": "config.json", "clip_vision": "config.json"}


class MissingModelFile(FileNotFoundError):
    def __init__(self, folder: str, name: str, searched: list[Path]) -> None:
        where = ", ".join(str(p) for p in searched) or "(no folder configured)"
        super().__init__(f"model file {name!r} not found in the {folder!r} folder (looked in: {where})")
        self.folder = folder
        self.name = name
        self.searched = searched


class UnsafePath(ValueError):
    """A user-supplied name would leave its folder."""


@dataclass
class FolderPaths:
    base: Path
    models_roots: list[Path] = field(default_factory=list)
    input_dir: Path | None = None
    output_dir: Path | None = None
    temp_dir: Path | None = None
    user_dir: Path | None = None
    # Extra paths per folder name from extra_model_paths.yaml.
    extra_folder_paths: dict[str, list[Path]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        if not self.models_roots:
            self.models_roots = [self.base / "models"]
        self.input_dir = Path(self.input_dir or self.base / "input")
        self.output_dir = Path(self.output_dir or self.base / "output")
        self.temp_dir = Path(self.temp_dir or self.base / "temp")
        self.user_dir = Path(self.user_dir or self.base / "user")

    # -- models -----------------------------------------------------------------------------

    def model_dirs(self, folder: str) -> list[Path]:
        dirs = [root / folder for root in self.models_roots]
        dirs += self.extra_folder_paths.get(folder, [])
        return dirs

    def list_models(self, folder: str) -> list[str]:
        """Relative names (forward slashes) of the models present in ``folder``: its files, and the
        folders that are one model (``DIRECTORY_MARKERS``, ``MIXED_MARKERS``), listed as the folder."""
        names: set[str] = set()
        extensions = MODEL_FOLDERS.get(folder, MODEL_EXTENSIONS)
        for directory in self.model_dirs(folder):
            if not directory.is_dir():
                continue
            if folder in DIRECTORY_FOLDERS:
                for marker in DIRECTORY_MARKERS[folder]:
                    for found in directory.rglob(marker):
                        names.add(found.parent.relative_to(directory).as_posix())
                continue
            model_dirs = {found.parent for found in directory.rglob(MIXED_MARKERS[folder])} \
                if folder in MIXED_MARKERS else set()
            names |= {d.relative_to(directory).as_posix() for d in model_dirs if d != directory}
            for path in directory.rglob("*"):
                if path.is_file() and path.suffix.lower() in extensions and path.suffix != ".yaml" \
                        and not model_dirs.intersection(path.parents):
                    names.add(path.relative_to(directory).as_posix())
        names.discard(".")
        # A name that is not UTF-8 on disk could never be sent in a JSON answer nor asked for.
        names = {name for name in names if servable_name(name)}
        return sorted(names)

    def model_path(self, folder: str, name: str) -> Path:
        """The path of model ``name`` in ``folder``; raises MissingModelFile naming the folder."""
        searched = self.model_dirs(folder)
        for directory in searched:
            candidate = safe_join(directory, name)
            if candidate.exists():
                return candidate
        raise MissingModelFile(folder, name, searched)

    def describe_folder(self, folder: str) -> str:
        return " or ".join(str(d) for d in self.model_dirs(folder))

    def missing_weights(self, folder: str, name: str, what: str) -> str | None:
        """None when weights file ``name`` is in ``folder``, else a validation message: ``what``
        (e.g. "FID needs torch-fidelity's Inception v3"), the file and where it must go."""
        try:
            self.model_path(folder, name)
            return None
        except (MissingModelFile, UnsafePath):
            return (f"{what}: {name!r} is not in the {folder!r} models folder ({self.describe_folder(folder)}); "
                    f"nothing is downloaded")

    # -- input/output/temp -------------------------------------------------------------------

    def directory_for(self, kind: str) -> Path:
        dirs = {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}
        if kind not in dirs:
            raise UnsafePath(f"unknown folder type {kind!r}; expected input, output or temp")
        path = dirs[kind]
        assert path is not None
        return path

    def load_extra_model_paths(self, yaml_file: Path) -> None:
        """Read ComfyUI's extra_model_paths.yaml: sections with ``base_path`` and
        ``folder: relative/path`` entries (several paths per folder separated by newlines)."""
        config = yaml.safe_load(Path(yaml_file).read_text()) or {}
        for section in config.values():
            if not isinstance(section, dict):
                continue
            base = Path(os.path.expanduser(str(section.get("base_path", ""))))
            if not base.is_absolute():
                base = Path(yaml_file).parent / base
            for folder, paths in section.items():
                if folder in ("base_path", "is_default") or not isinstance(paths, str):
                    continue
                for line in paths.splitlines():
                    if line.strip():
                        self.extra_folder_paths.setdefault(folder, []).append(base / line.strip())


# The longest file name (one path component) the common file systems store, and the longest
# path the OS looks up, in bytes (Linux's NAME_MAX and PATH_MAX).
NAME_MAX = 255
PATH_MAX = 4096


def servable_name(name: str) -> bool:
    """Whether ``name`` can travel in a JSON answer or a URL: it encodes as UTF-8. A name read
    from a disk holding non-UTF-8 bytes (decoded with surrogateescape), or sent with a lone
    surrogate escape, does not; listings skip such entries and safe_join refuses them."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_join(directory: Path, name: str) -> Path:
    """``directory / name`` resolved, refusing anything that leaves ``directory``: ``..``,
    absolute paths, NUL bytes, backslashes, and symlinks pointing outside; and refusing, as
    UnsafePath too, what the OS could not look up: a component over NAME_MAX bytes, a symlink loop."""
    if not servable_name(name):
        # os.fsencode would accept "\udce9" (surrogateescape) and store a file every listing of
        # it then fails to encode; refuse it here, where every upload and user file passes.
        raise UnsafePath(f"refusing file name {name!r}: it is not valid UTF-8")
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or ":" in name[:3]:
        raise UnsafePath(f"refusing file name {name!r}")
    parts = name.split("/")
    if any(part in ("..", "") for part in parts):
        raise UnsafePath(f"refusing file name {name!r}")
    root = directory.resolve()
    try:
        too_long = any(len(os.fsencode(part)) > NAME_MAX for part in parts) \
            or len(os.fsencode(f"{root}/{name}")) >= PATH_MAX
    except UnicodeEncodeError:  # a lone surrogate: no file system can hold it
        raise UnsafePath(f"refusing file name {name!r}: it cannot be encoded") from None
    if too_long:
        raise UnsafePath(f"refusing file name {name[:64]!r}…: longer than {NAME_MAX} bytes a name "
                         f"or {PATH_MAX} bytes a path")
    try:
        candidate = (root / name).resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: Path.resolve's "Symlink loop"
        reason = "it is a symlink loop" if isinstance(exc, RuntimeError) else exc.strerror
        raise UnsafePath(f"refusing file name {name!r}: {reason}") from None
    if candidate != root and root not in candidate.parents:
        raise UnsafePath(f"refusing file name {name!r}: it leaves {directory}")
    return candidate
