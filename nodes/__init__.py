"""NodeLoom's built-in node library.

Its packs (``nodes.core``, ``nodes.diffusion``) are plugins like any other: each registers its node
classes through the ``nodeloom_register_nodes`` hook, and the registry loads them first
(``graph_runtime.registry.BUILTIN_PLUGINS``).
"""
