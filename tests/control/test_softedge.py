"""Soft-edge nodes: the Sobel extractor is bright on a synthetic image's edges only; HED and PiDiNet run
through controlnet_aux on the zoo's annotator files; a missing file is a validation error."""

from __future__ import annotations

import torch

from nodes.control.softedge import HEDPreprocessor, PiDiNetPreprocessor, SoftEdgeSobel, output_size


def _square(size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """A white square on black and the mask of its one-pixel outline band (+-2 px)."""
    image = torch.zeros(1, size, size, 3)
    a, b = size // 4, 3 * size // 4
    image[:, a:b, a:b] = 1.0
    band = torch.zeros(size, size, dtype=torch.bool)
    band[a - 3:b + 3, a - 3:b + 3] = True
    band[a + 3:b - 3, a + 3:b - 3] = False
    return image, band


def test_sobel_is_bright_on_the_edges_only(make_ctx) -> None:
    image, band = _square()
    edges = SoftEdgeSobel().run(make_ctx(), image=image, detect_resolution=128, image_resolution=128, safe=False,
                                blur_sigma=1.0)[0]
    assert edges.shape == (1, 128, 128, 3)
    gray = edges[0, ..., 0]
    assert gray[band].max() == 1.0 and gray[band].mean() > 0.3
    assert gray[~band].max() < 0.05


def test_sobel_safe_quantises_and_resizes_like_controlnet_aux(make_ctx) -> None:
    image, _ = _square(100)
    edges = SoftEdgeSobel().run(make_ctx(), image=image, detect_resolution=100, image_resolution=200, safe=True,
                                blur_sigma=0.0)[0]
    assert edges.shape[1:3] == output_size(100, 100, 200) == (192, 192)
    assert edges.min() >= 0 and edges.max() <= 1


def test_hed_and_pidinet_run_on_the_zoo_files(make_ctx) -> None:
    image, _ = _square(64)
    for node in (HEDPreprocessor(), PiDiNetPreprocessor()):
        out = node.run(make_ctx(), image=image.repeat(2, 1, 1, 1), detect_resolution=64, image_resolution=64, safe=True)[0]
        assert out.shape == (2, 64, 64, 3) and out.dtype == torch.float32
        levels = set((out * 255).round().unique().tolist())
        assert levels <= {0.0, 127.0, 255.0}, f"{type(node).__name__}: safe output not quantised: {levels}"


def test_missing_weights_name_the_file_and_folder(tmp_path) -> None:
    from graph_runtime.folders import FolderPaths

    ctx = type("Ctx", (), {"folders": FolderPaths(base=tmp_path)})()
    problem = HEDPreprocessor.validate_inputs(ctx)
    assert problem is not None and "ControlNetHED.pth" in problem and "annotators" in problem
    assert "table5_pidinet.pth" in PiDiNetPreprocessor.validate_inputs(ctx)
