"""What a training run shows while it runs: a progress line and a picture.

The line (``ctx.progress``'s text) gives step/total, loss, smoothed loss, learning rate, it/s and
ETA. The picture, every ``preview_every`` steps, is the recipe's sample image next to the loss
curve, sent as the progress preview the editor draws on the node (people would rather look than
read); the two are also written as PNGs into the run folder.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field

import torch
from PIL import Image

PREVIEW_HEIGHT = 256


@dataclass
class LossMeter:
    """Loss per optimizer step, its bias-corrected exponential moving average (``beta``, as
    TensorBoard's smoothing) and the speed of this session (resumed steps are not counted)."""

    beta: float = 0.9
    history: list[float] = field(default_factory=list)
    _started: float = field(default_factory=time.perf_counter)
    _first_step: int | None = None

    def add(self, loss: float) -> None:
        self.history.append(float(loss))

    @property
    def smoothed(self) -> float:
        value, weight = 0.0, 0.0
        for loss in self.history[-200:]:
            value = self.beta * value + (1 - self.beta) * loss
            weight = self.beta * weight + (1 - self.beta)
        return value / weight if weight else float("nan")

    def start(self, step: int) -> None:
        self._started, self._first_step = time.perf_counter(), step

    def rate(self, step: int) -> float:
        """Optimizer steps per second since :meth:`start`."""
        done = step - (self._first_step if self._first_step is not None else step)
        elapsed = time.perf_counter() - self._started
        return done / elapsed if done > 0 and elapsed > 0 else 0.0

    def line(self, step: int, total: int, lr: float) -> str:
        """``step 40/200 loss 0.1234 (smoothed 0.1301) lr 1.00e-04 3.21 it/s ETA 0:00:49``."""
        rate = self.rate(step)
        eta = _clock((total - step) / rate) if rate > 0 else "?"
        loss = self.history[-1] if self.history else float("nan")
        return (f"step {step}/{total} loss {loss:.4f} (smoothed {self.smoothed:.4f}) lr {lr:.2e} "
                f"{rate:.2f} it/s ETA {eta}")


def _clock(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def loss_curve(history: list[float], *, total: int, height: int = PREVIEW_HEIGHT) -> Image.Image:
    """The loss per step (faint) and its moving average over ~5% of the steps, as an RGB image
    ``height`` pixels high (4:3). Matplotlib's Agg backend: no display needed."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 3), dpi=height / 3)
    axes = figure.add_subplot()
    steps = range(1, len(history) + 1)
    axes.plot(steps, history, color="#9ab", linewidth=0.8, label="loss")
    window = max(1, len(history) // 20)
    if len(history) > window > 1:
        kernel = torch.ones(window) / window
        smooth = torch.nn.functional.conv1d(torch.tensor(history)[None, None], kernel[None, None])[0, 0]
        axes.plot(range(window, len(history) + 1), smooth.tolist(), color="#d33", linewidth=1.5,
                  label=f"mean of {window}")
        axes.legend(loc="upper right", fontsize=7)
    axes.set_xlim(0, max(total, 1))
    axes.set_xlabel("step", fontsize=8)
    axes.set_ylabel("loss", fontsize=8)
    axes.tick_params(labelsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def side_by_side(sample: torch.Tensor | None, curve: Image.Image) -> Image.Image:
    """``sample`` ([H, W, 3] float 0..1, or None) scaled to the curve's height, then the curve."""
    if sample is None:
        return curve
    array = (sample.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy())
    picture = Image.fromarray(array[..., :3])
    scale = curve.height / picture.height
    picture = picture.resize((max(1, round(picture.width * scale)), curve.height), Image.Resampling.NEAREST
                             if scale >= 2 else Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (picture.width + curve.width, curve.height), "white")
    canvas.paste(picture, (0, 0))
    canvas.paste(curve, (picture.width, 0))
    return canvas


def encode(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **({"quality": 85} if image_format == "JPEG" else {}))
    return buffer.getvalue()
