"""High-resolution training images with real texture: crops of scikit-image's sample photographs
(public domain or CC0, shipped in the pip package), for TrainESRGAN's example workflow and tests."""

from __future__ import annotations

from pathlib import Path

# (scikit-image sample, top, left) of each 128x128 crop
CROPS: tuple[tuple[str, int, int], ...] = (("astronaut", 40, 180), ("coffee", 120, 200), ("chelsea", 80, 150),
                                           ("rocket", 200, 260))
HELD_OUT: tuple[tuple[str, int, int], ...] = (("astronaut", 300, 300), ("coffee", 250, 400), ("chelsea", 150, 300))
SIZE = 128


def photo_crop(name: str, top: int, left: int, size: int = SIZE):  # type: ignore[no-untyped-def]
    """[size, size, 3] uint8 numpy crop of ``skimage.data.<name>()``."""
    from skimage import data

    return getattr(data, name)()[top:top + size, left:left + size, :3].copy()


def write_hr_dataset(folder: Path) -> list[Path]:
    """``nodeloom_hr/``: four 128x128 photograph crops with kohya-style sidecar captions (the
    DATASET loader wants one; TrainESRGAN does not use it)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name, top, left in CROPS:
        path = folder / f"{name}.png"
        Image.fromarray(photo_crop(name, top, left)).save(path)
        path.with_suffix(".txt").write_text(f"a photograph ({name})\n")
        paths += [path, path.with_suffix(".txt")]
    return paths
