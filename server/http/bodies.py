"""Request bodies of the JSON POST routes, and how /openapi.json describes them.

The routes read their bodies themselves (ComfyUI's own example scripts post JSON with urllib's
form content type), so FastAPI cannot derive the request bodies; ``body_schema`` writes them into
the OpenAPI document. The models stay loose where ComfyUI's error shapes must come from the
scheduler (a malformed prompt is ``invalid_prompt`` with node errors, not a pydantic error); the
documented schemas are precise, so clients and fuzzers know what a meaningful request looks like.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

_LINK = {"type": "array", "description": "[source node id, output index]", "minItems": 2, "maxItems": 2,
         "prefixItems": [{"type": "string"}, {"type": "integer", "minimum": 0}], "items": False}
_INPUT_VALUE = {"anyOf": [_LINK, {"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
_API_NODE = {
    "type": "object", "required": ["class_type", "inputs"],
    "properties": {"class_type": {"type": "string", "minLength": 1, "description": "a node type of GET /object_info"},
                   "inputs": {"type": "object", "additionalProperties": _INPUT_VALUE},
                   "_meta": {"type": "object", "properties": {"title": {"type": "string"}}}},
}
API_PROMPT_SCHEMA: dict[str, Any] = {
    "title": "API-format prompt", "type": "object", "additionalProperties": _API_NODE,
    "description": "ComfyUI's API format: nodes keyed by id.",
}
_UI_NODE = {
    "type": "object", "required": ["id", "type"],
    "properties": {
        "id": {"anyOf": [{"type": "integer"}, {"type": "string"}]}, "type": {"type": "string", "minLength": 1},
        "mode": {"type": "integer", "enum": [0, 2, 4]},
        "inputs": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "type": {"type": "string"},
            "link": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}},
        "outputs": {"type": "array", "items": {"type": "object"}},
        "widgets_values": {"anyOf": [{"type": "array"}, {"type": "object"}]},
    },
}
UI_WORKFLOW_SCHEMA: dict[str, Any] = {
    "title": "UI-format workflow", "type": "object", "required": ["nodes", "links"],
    "description": "What ComfyUI's editor saves (nodes, links, widgets_values); converted on the server.",
    "properties": {
        "nodes": {"type": "array", "items": _UI_NODE},
        "links": {"type": "array", "items": {"type": "array", "minItems": 6, "maxItems": 6,
                                             "description": "[link id, from node, from slot, to node, to slot, type]"}},
        "version": {"type": "number"},
    },
}
_EXAMPLE_PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16711680}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "red"}},
}

_PromptDocument = Annotated[
    dict[str, Any] | None,
    WithJsonSchema({"anyOf": [API_PROMPT_SCHEMA, UI_WORKFLOW_SCHEMA], "examples": [_EXAMPLE_PROMPT]}),
]
_ExtraData = Annotated[dict[str, Any] | None, WithJsonSchema({
    "type": "object",
    "properties": {"extra_pnginfo": {"type": "object", "description": "embedded in saved PNGs; "
                                     "`workflow` holds the UI workflow"},
                   "webhook_url": {"type": "string", "format": "uri",
                                   "description": "POSTed the history entry when the prompt finishes"},
                   "client_id": {"type": "string"}},
})]


class PromptRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt: _PromptDocument = Field(None, description="API-format prompt, or a UI-format workflow")
    client_id: str | None = Field(None, description="the /ws clientId that receives this prompt's events")
    extra_data: _ExtraData = Field(None, description="extra_pnginfo (the UI workflow), webhook_url, …")
    front: bool | None = Field(None, description="queue ahead of every pending prompt")
    number: float | None = Field(None, description="explicit queue position (lower runs first)")
    prompt_id: str | None = Field(None, description="a new id of the caller's choosing (default: a UUID)")
    partial_execution_targets: list[str] | None = Field(None, description="output node ids to run (default: all)")


class QueueRequest(BaseModel):
    clear: bool | None = None
    delete: list[str] | None = None


class InterruptRequest(BaseModel):
    prompt_id: str | None = Field(None, description="interrupt only this prompt (default: every running one)")


class FreeRequest(BaseModel):
    unload_models: bool | None = None
    free_memory: bool | None = None


Model = TypeVar("Model", bound=BaseModel)
# Bodies up to this size are parsed on the event loop (a thread hop costs more than parsing them).
INLINE_PARSE_BYTES = 256 * 1024


async def read_body(request: Request, model: type[Model]) -> Model:
    """The JSON body whatever its content type. An empty body reads as ``{}``. Errors become
    400s (the app's ValidationError handler)."""
    raw = await request.body()
    if len(raw) > INLINE_PARSE_BYTES:  # a large prompt: parsed off the event loop
        return await asyncio.to_thread(model.model_validate_json, raw)
    return model.model_validate_json(raw if raw.strip() else b"{}")


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for a route that parses its body itself."""
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": model.model_json_schema()}}}}
