"""Detectors: IMAGE -> BBOX.

``BBoxDetectHaar`` needs no download: OpenCV's Haar cascades ship in opencv-python-headless 4.x
(``cv2.data.haarcascades``; 5.x dropped them, hence the pin). ``BBoxDetectYOLO`` runs a YOLO
detection model (e.g. a face_yolov8 file) the user puts in ``models/face_detectors``, through the
optional ``ultralytics`` package (AGPL-3.0; not a dependency of NodeLoom).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graph_runtime import Combo, Context, Float, HookContext, Int, Link, ModelFile, Node, Output

from nodes.detail.bbox import BBOX, BBoxes, Box, select

# The face cascades OpenCV ships; any other cascade .xml goes in models/face_detectors.
BUILTIN_CASCADES: tuple[str, ...] = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt.xml",
                                     "haarcascade_frontalface_alt2.xml", "haarcascade_profileface.xml")
DETECTORS_FOLDER = "face_detectors"


def _cascade_choices(ctx: HookContext) -> list[str]:
    own = [name for name in ctx.folders.list_models(DETECTORS_FOLDER) if name.lower().endswith(".xml")]
    return list(BUILTIN_CASCADES) + [name for name in own if name not in BUILTIN_CASCADES]


def cascade_path(ctx: HookContext, name: str) -> Path:
    """The file of cascade ``name``: OpenCV's own for the built-in names (they take precedence),
    else ``models/face_detectors/<name>`` (MissingModelFile names the folder)."""
    if name in BUILTIN_CASCADES:
        import cv2

        return Path(cv2.data.haarcascades) / name
    return ctx.folders.model_path(DETECTORS_FOLDER, name)


def file_fingerprint(ctx: HookContext, folder: str, name: str | None) -> Any:
    """(mtime, size) of a model file, so the executor re-runs a node whose file was replaced."""
    try:
        stat = ctx.folders.model_path(folder, name or "").stat()
    except (OSError, ValueError):
        return None
    return (stat.st_mtime_ns, stat.st_size)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """One IMAGE ``[H, W, C]`` 0..1 as ``[H, W, 3]`` uint8 RGB (alpha dropped, grey repeated)."""
    rgb = image[..., :3] if image.shape[-1] >= 3 else image[..., :1].expand(*image.shape[:-1], 3)
    return (rgb.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


class BBoxDetectHaar(Node):
    display_name = "Detect Boxes (Haar cascade)"
    category = "detail"
    description = (
        "Find faces (or what a user cascade was trained on) with an OpenCV Haar cascade: no download. "
        "Runs cv2.CascadeClassifier.detectMultiScale2 on the histogram-equalised grey image (OpenCV's face "
        "detection tutorial). min_neighbors is the cascade's confidence threshold (each box's score is the "
        "number of raw detections merged into it); boxes smaller than min_size pixels are dropped; at most "
        "max_count per image (0: all), highest score first. Built-in cascades: OpenCV's frontal faces "
        "(default, alt, alt2) and profile (faces turned to their left); others from models/face_detectors.")
    inputs = [Link("image", "IMAGE"), Combo("cascade", _cascade_choices, default=BUILTIN_CASCADES[0]),
              Float("scale_factor", 1.1, min=1.01, max=2.0, step=0.01,
                    tooltip="image pyramid step between scales (smaller: slower, finds more sizes)"),
              Int("min_neighbors", 5, min=0, max=100, tooltip="raw detections a face needs (confidence)"),
              Int("min_size", 32, min=1, max=16384, tooltip="smallest box side in pixels"),
              Int("max_count", 0, min=0, max=1000, tooltip="most boxes per image, best first (0: all)")]
    outputs = [Output(BBOX)]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, cascade: str | None = None, **_: Any) -> Any:
        return None if cascade in BUILTIN_CASCADES else file_fingerprint(ctx, DETECTORS_FOLDER, cascade)

    def run(self, ctx: Context, *, image: torch.Tensor, cascade: str, scale_factor: float, min_neighbors: int,
            min_size: int, max_count: int) -> tuple[BBoxes]:
        import cv2

        path = cascade_path(ctx, cascade)
        try:
            classifier = cv2.CascadeClassifier(str(path))
        except (cv2.error, SystemError) as exc:  # OpenCV's parser raises on malformed XML
            raise ValueError(f"cascade {cascade!r} ({path}) is not an OpenCV cascade classifier file: {exc}") from exc
        if classifier.empty():
            raise ValueError(f"cascade {cascade!r} ({path}) is not an OpenCV cascade classifier file")
        height, width = image.shape[1], image.shape[2]
        found: list[Box] = []
        for index, item in enumerate(image):
            ctx.check_interrupted()
            grey = cv2.equalizeHist(cv2.cvtColor(to_uint8(item), cv2.COLOR_RGB2GRAY))
            rects, votes = classifier.detectMultiScale2(grey, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                                        minSize=(min_size, min_size))
            for (x, y, w, h), count in zip(np.asarray(rects).reshape(-1, 4), np.asarray(votes).reshape(-1)):
                found.append(Box(float(x), float(y), float(x + w), float(y + h), score=float(count),
                                 label="face", batch_index=index, image_size=(height, width)))
        return (select(found, min_size=min_size, max_count=max_count),)


def ultralytics_missing() -> str | None:
    if importlib.util.find_spec("ultralytics") is None:
        return ("BBoxDetectYOLO needs the optional 'ultralytics' package (AGPL-3.0), which is not installed: "
                "pip install ultralytics; or use BBoxDetectHaar, which needs nothing")
    return None


class BBoxDetectYOLO(Node):
    display_name = "Detect Boxes (YOLO)"
    category = "detail"
    description = (
        "Detect with an ultralytics YOLO model file from models/face_detectors (e.g. face_yolov8n.pt, "
        "hand_yolov8n.pt; .pt files are pickles that ultralytics loads in full, so use files you trust). "
        "threshold: confidence 0..1 (0.3 is ADetailer's default); boxes smaller than min_size pixels are "
        "dropped; at most max_count per image (0: all), highest confidence first. Labels are the model's "
        "class names. Needs the optional ultralytics package.")
    inputs = [Link("image", "IMAGE"), ModelFile("model_name", DETECTORS_FOLDER),
              Float("threshold", 0.3, min=0.0, max=1.0, step=0.01),
              Int("min_size", 0, min=0, max=16384), Int("max_count", 0, min=0, max=1000)]
    outputs = [Output(BBOX)]

    @classmethod
    def fingerprint(cls, ctx: HookContext, *, model_name: str | None = None, **_: Any) -> Any:
        return file_fingerprint(ctx, DETECTORS_FOLDER, model_name)

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        name = widgets.get("model_name")
        if isinstance(name, str) and not name.lower().endswith((".pt", ".onnx")):
            return f"model_name {name!r}: a YOLO detector is a .pt (or exported .onnx) file"
        return ultralytics_missing()

    def run(self, ctx: Context, *, image: torch.Tensor, model_name: str, threshold: float, min_size: int,
            max_count: int) -> tuple[BBoxes]:
        missing = ultralytics_missing()
        if missing:
            raise RuntimeError(missing)
        from ultralytics import YOLO

        path = ctx.folders.model_path(DETECTORS_FOLDER, model_name)
        stat = path.stat()
        models = ctx.services.get_or_create("detail.yolo_models", dict)
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in models:
            models.clear()  # one detector kept: files are small, a second one is rarely alternated with
            models[key] = YOLO(str(path))
        model = models[key]
        height, width = image.shape[1], image.shape[2]
        found: list[Box] = []
        for index, item in enumerate(image):
            ctx.check_interrupted()
            # a numpy array would be read as BGR (OpenCV order): hand it over as a PIL image (RGB)
            from PIL import Image

            result = model(Image.fromarray(to_uint8(item)), conf=threshold, verbose=False)[0]
            names = result.names
            for xyxy, conf, cls in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(),
                                       result.boxes.cls.tolist()):
                found.append(Box(*map(float, xyxy), score=float(conf), label=str(names.get(int(cls), int(cls))),
                                 batch_index=index, image_size=(height, width)))
        return (select(found, min_size=min_size, max_count=max_count),)


NODES: list[type[Node]] = [BBoxDetectHaar, BBoxDetectYOLO]
