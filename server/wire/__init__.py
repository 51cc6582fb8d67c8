"""The wire: graph_runtime events as ComfyUI websocket messages and frames, the websocket hub,
the error body."""
