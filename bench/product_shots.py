"""Product shots and their judges: what they cost, and how far the judges can be trusted on
pictures worse than renders.

    python bench/product_shots.py                 # the default shape judge (fit(0), about a minute)
    python bench/product_shots.py --steps 200     # a quicker, weaker shape judge

Speed, each against a reference measured in the same run: rendering a 32/128 px pair vs. reading
the two PNGs back (what ProductShots does on a second run), judging colour vs. rendering, and the
shape CNN per image. Robustness: colour, background and shape accuracy on fresh renders of every
combination (held-out ones included) blurred (Gaussian sigma, px at 32 px) and noised (Gaussian,
sigma in 0..1 units), the degradations a generated picture shows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import gaussian_blur

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodes.demo.judge import background_colour, object_colour  # noqa: E402
from nodes.demo.products import SHAPES, all_specs, render, render_pair, to_array  # noqa: E402
from nodes.demo.shape_classifier import fit  # noqa: E402

CONDITIONS = [(0.0, 0.0), (0.8, 0.03), (1.2, 0.06), (0.0, 0.08), (1.6, 0.1)]


def per_item(function, items) -> float:
    start = time.perf_counter()
    for item in items:
        function(item)
    return (time.perf_counter() - start) / len(items)


def speed(n: int) -> None:
    specs = all_specs()[:n]
    with tempfile.TemporaryDirectory() as folder:
        def write(index: int) -> None:
            low, high = render_pair(specs[index], index)
            low.save(f"{folder}/{index}.png"), high.save(f"{folder}/{index}_hr.png")

        def read(index: int) -> None:
            for name in (f"{index}.png", f"{index}_hr.png"):
                with Image.open(f"{folder}/{name}") as picture:
                    picture.load()

        rendered = per_item(write, range(n))
        read_back = per_item(read, range(n))
    pictures = [to_array(render(spec, 1, 32)) for spec in specs]
    render_32 = per_item(lambda spec: render(spec, 1, 32), specs)
    colour = per_item(lambda image: (object_colour(image), background_colour(image)), pictures)
    print(f"render + save a 32/128 pair: {rendered * 1e3:.1f} ms = {rendered / read_back:.0f}x reading it back "
          f"({read_back * 1e3:.2f} ms)")
    print(f"judge colours of a 32 px picture: {colour * 1e3:.1f} ms = {colour / render_32:.1f}x rendering it "
          f"({render_32 * 1e3:.1f} ms)")


def degrade(pixels: torch.Tensor, sigma: float, noise: float) -> torch.Tensor:
    if sigma:
        pixels = gaussian_blur(pixels, [5, 5], [sigma, sigma])
    return (pixels + noise * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)


def robustness(steps: int, seeds: int) -> None:
    start = time.perf_counter()
    classifier = fit(0, steps=steps)
    fitted = time.perf_counter() - start
    specs = [spec for spec in all_specs() for _ in range(seeds)]
    clean = torch.stack([torch.from_numpy(to_array(render(spec, 7000 + i, 32))).permute(2, 0, 1)
                         for i, spec in enumerate(specs)])
    start = time.perf_counter()
    classifier.predict(clean.permute(0, 2, 3, 1))
    predict = (time.perf_counter() - start) / len(specs)
    print(f"shape judge: fit({steps} steps) {fitted:.0f} s (one thread), "
          f"predict {predict * 1e3:.2f} ms per picture")
    print(f"{'blur':>5} {'noise':>6} {'colour':>7} {'backgr.':>8} {'shape':>6}   ({len(specs)} pictures each)")
    for sigma, noise in CONDITIONS:
        images = degrade(clean, sigma, noise).permute(0, 2, 3, 1)
        shapes = classifier.predict(images)
        arrays = images.numpy()
        colour = np.mean([object_colour(a) == s.colour for a, s in zip(arrays, specs)])
        background = np.mean([background_colour(a) == s.background for a, s in zip(arrays, specs)])
        shape = np.mean([p == s.shape for p, s in zip(shapes, specs)])
        print(f"{sigma:5.1f} {noise:6.2f} {colour:7.3f} {background:8.3f} {shape:6.3f}")
    assert set(SHAPES) == {s.shape for s in specs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="shape judge training steps (fit's default 600)")
    parser.add_argument("--seeds", type=int, default=2, help="renders per combination in the robustness table")
    parser.add_argument("--n", type=int, default=60, help="pictures timed in the speed figures")
    args = parser.parse_args()
    speed(args.n)
    robustness(args.steps, args.seeds)


if __name__ == "__main__":
    main()
