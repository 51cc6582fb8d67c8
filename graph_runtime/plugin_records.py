"""What the registry records about link types and plugins: the core link types every node may
use, and one record per plugin (where it came from, its status, error, nodes, types, skips)."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger("graph_runtime.registry")

CORE_TYPES: dict[str, str] = {
    "MODEL": "a diffusion model (UNet) with its patches",
    "CLIP": "text encoder(s) and tokenizer(s)",
    "VAE": "image autoencoder",
    "CONDITIONING": "encoded prompt: list of [embeddings, extras]",
    "LATENT": "{'samples': tensor [B,C,h,w], optional 'noise_mask', 'batch_index'}",
    "IMAGE": "float tensor [B,H,W,C] in 0..1",
    "MASK": "float tensor [B,H,W] in 0..1",
    "CONTROL_NET": "a ControlNet model",
    "UPSCALE_MODEL": "an image-to-image upscaler (spandrel descriptor)",
    "CLIP_VISION": "an image encoder",
    "CLIP_VISION_OUTPUT": "image encoder outputs",
    "SAMPLER": "a sampling algorithm",
    "SIGMAS": "a noise schedule",
    "NOISE": "a noise source",
    "GUIDER": "a guidance method",
    "INT": "integer", "FLOAT": "float", "STRING": "string", "BOOLEAN": "boolean",
    "*": "any type",
}

Source = Literal["builtin", "entry_point", "folder"]


@dataclass
class PluginRecord:
    name: str
    source: Source
    location: str
    status: Literal["loaded", "failed"] = "loaded"
    error: str | None = None
    nodes: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    # Node names this plugin declared but could not register, with the reason.
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "location": self.location,
                "status": self.status, "error": self.error, "nodes": self.nodes,
                "types": self.types, "skipped": self.skipped}


def fail_plugin(record: PluginRecord, exc: BaseException) -> PluginRecord:
    """Mark ``record`` failed with ``exc`` as its error, logged; returns it."""
    record.status = "failed"
    record.error = f"{type(exc).__name__}: {exc}"
    log.warning("plugin %s skipped: %s", record.name, record.error)
    log.debug("%s", "".join(traceback.format_exception(exc)))
    return record
