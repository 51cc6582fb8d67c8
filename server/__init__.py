"""``nodeloom serve``: ComfyUI-compatible HTTP + websocket server over isolated worker processes."""
