"""Shared torch infrastructure of the node families; it defines no nodes.

``model_manager``: loaded modules under RAM/VRAM budgets, load policies, the per-file
descriptions cache. ``files``: reading model files safely and building modules from them.
``ldm_keys``: original (LDM/SGM) <-> diffusers key mapping. ``tiling``: tiled inference of image networks
(overlap, feathered blending, smaller tiles on out-of-memory). ``tokenizer``: offline CLIP tokenizers.
"""
