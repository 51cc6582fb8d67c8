"""Region touch-up: detection, segment-anything masks, crop/enlarge/resample/paste (FaceDetailer).

Link types: BBOX (detected regions, tuples of ``nodes.detail.bbox.Box``) and SAM_MODEL.
"""

from __future__ import annotations

from graph_runtime import Node, hookimpl
from nodes import collect_nodes

MODULES: tuple[str, ...] = ("bbox", "detect", "sam", "regions", "detailer")


@hookimpl
def nodeloom_register_types() -> dict[str, str]:
    from nodes.detail.bbox import BBOX, BBOX_DESCRIPTION
    from nodes.detail.sam import SAM_DESCRIPTION, SAM_MODEL

    return {BBOX: BBOX_DESCRIPTION, SAM_MODEL: SAM_DESCRIPTION}


@hookimpl
def nodeloom_register_nodes() -> list[type[Node]]:
    return collect_nodes(__name__, MODULES)
