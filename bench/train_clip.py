"""TrainCLIP's training step against the plain transformers CLIP step on the same model and batch
(``CLIPModel(input_ids, pixel_values)``, every caption padded to 77 tokens, one text per image,
CLIP's one-positive loss, backward, AdamW), measured ``--repeats`` times, alternating, in this
process. The recipe's step differs in two ways that keep its loss's value (the multi-positive
targets aside): each distinct caption of the batch goes through the text tower once, and the tokens
after the longest caption's ``<|endoftext|>`` are cut (causal attention: they cannot change it).

    OMP_NUM_THREADS=2 python bench/train_clip.py          # TrainCLIP's defaults: 128-wide towers, 32 px, batch 64
    python bench/train_clip.py --captions 280 --steps 10 --repeats 5

Captions are product-shot-like ("a red mug on a blue background", 7 words); ``--captions`` distinct
ones, sampled with replacement per batch. Reported: seconds per step (median) and the ratio
plain / TrainCLIP.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple"]
SHAPES = ["mug", "bottle", "box", "shoe", "lamp"]
BACKGROUNDS = ["white", "blue", "grey", "pink", "green", "orange", "black"]


def captions(count: int) -> list[str]:
    every = [f"a {c} {s} on a {b} background" for c in COLOURS for s in SHAPES for b in BACKGROUNDS]
    return every[:count]


def recipe_for(texts: list[str], batch_size: int) -> object:
    """A CLIPRecipe over a dataset stand-in (``sample_indexed``/``items``/``buckets``)."""
    import tempfile

    from nodes.infra.tokenizer import caption_vocab, write_vocab
    from nodes.training.clip_recipe import CLIPOptions, CLIPRecipe

    items = tuple(SimpleNamespace(caption=t) for t in texts)

    def sample_indexed(size: int, generator: torch.Generator, pixels: bool = True) -> tuple:
        picks = torch.randint(0, len(items), (size,), generator=generator).tolist()
        return picks, torch.rand(size, 3, 32, 32, generator=generator) * 2 - 1, [texts[i] for i in picks]

    dataset = SimpleNamespace(items=items, caption_template="{caption}", buckets=lambda: {(32, 32): []},
                              sample_indexed=sample_indexed, fixed_pixels=True)
    folder = Path(tempfile.mkdtemp()) / "tokenizer"
    write_vocab(folder, *caption_vocab(texts))
    return CLIPRecipe(dataset, CLIPOptions(batch_size=batch_size), folder, folder.parent / "scorer",
                      folder.parent / "tok", torch.device("cpu"))


def time_steps(step: object, steps: int) -> float:
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captions", type=int, default=280)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    recipe = recipe_for(captions(args.captions), args.batch_size)
    model = recipe.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)

    def ours() -> None:
        optimizer.zero_grad(set_to_none=True)
        recipe.loss(recipe.batch(1, 0, generator), 1).backward()
        optimizer.step()

    def plain() -> None:
        pixels, groups = recipe.batch(1, 0, generator)
        optimizer.zero_grad(set_to_none=True)
        logits = model(input_ids=recipe.caption_ids[groups], pixel_values=pixels).logits_per_image
        labels = torch.arange(len(groups))
        ((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2).backward()
        optimizer.step()

    timings: dict[str, list[float]] = {"plain": [], "TrainCLIP": []}
    for _ in range(args.repeats):
        timings["plain"].append(time_steps(plain, args.steps))
        timings["TrainCLIP"].append(time_steps(ours, args.steps))
    median = {k: statistics.median(v) for k, v in timings.items()}
    print(f"{args.captions} captions, batch {args.batch_size}, {torch.get_num_threads()} threads")
    for name, value in median.items():
        print(f"{name:10s} {value:.3f} s/step")
    print(f"ratio plain / TrainCLIP: {median['plain'] / median['TrainCLIP']:.2f}")


if __name__ == "__main__":
    main()
