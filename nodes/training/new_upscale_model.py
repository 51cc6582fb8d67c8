"""InitUpscaleModel: a freshly initialised, seeded ESRGAN generator (RRDBNet, Wang et al. 2018,
"ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks") as an UPSCALE_MODEL, for
TrainESRGAN to train from scratch. The network is spandrel's ESRGAN architecture, so the file
TrainESRGAN saves from it loads in UpscaleModelLoader (and in ComfyUI/chaiNNer) like any ESRGAN.

Initialisation follows the ESRGAN paper's "smaller initialisation" (BasicSR's RRDBNet): Kaiming
normal weights, scaled by 0.1 inside the residual dense blocks so each block starts near the
identity; biases zero. The last convolution's weights are scaled by 0.1 too and its bias is 0.5, so
the untrained output is mid-grey (the mean of 0..1 images) with a small spread, rather than
saturated at 0 or 1 under the [0, 1] clamp, where no gradient would reach it.

``initialisation`` "nearest" starts from nearest-neighbour upscaling instead: the convolutions
outside the residual trunk carry the three colour channels through their centre taps (LeakyReLU
passes the non-negative values unchanged) plus a 0.1-scaled random part, and the trunk starts near
zero, so the untrained model already upscales and training only learns the detail (a residual
start, as the trunk's own skip connection does for the features). On the demo's product shots it
is at nearest-neighbour's PSNR from the first step, where the paper's start was still 4 dB below
it after 400 steps (docs/demo.md).
"""

from __future__ import annotations

from typing import Any

import torch

from graph_runtime import Combo, Int, Node, Output
from graph_runtime.context import Context, HookContext
from nodes.infra.model_manager import LoadPolicy, ModelManager, ModelRef, manager_from
from nodes.training.loop import seeded
from nodes.upscale.spandrel_models import PART, SpandrelModule, UpscaleModel, compute_dtype, describe, registry

SCALES = (2, 4)
INITIALISATIONS: tuple[str, ...] = ("esrgan", "nearest")
RESIDUAL_INIT_SCALE = 0.1  # ESRGAN's smaller initialisation of the residual dense blocks
OUTPUT_BIAS = 0.5
PASS_THROUGH_NOISE = 0.01  # the random part beside the colour pass-through: small, not zero (zero never trains)


def initial_state(num_filters: int, num_blocks: int, scale: int, seed: int,
                  initialisation: str = "esrgan") -> dict[str, torch.Tensor]:
    """The state dict of a new ESRGAN (3 -> 3 channels, ``scale`` x), the same for the same arguments."""
    from spandrel.architectures.ESRGAN import ESRGAN

    with seeded(seed):
        net = ESRGAN(in_nc=3, out_nc=3, num_filters=num_filters, num_blocks=num_blocks, scale=scale)
        convs = [(name, m) for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
        with torch.no_grad():
            for name, conv in convs:
                torch.nn.init.kaiming_normal_(conv.weight, a=0.2, nonlinearity="leaky_relu")
                if ".RDB" in name:
                    conv.weight.mul_(RESIDUAL_INIT_SCALE)
                torch.nn.init.zeros_(conv.bias)
            convs[-1][1].weight.mul_(RESIDUAL_INIT_SCALE)
            convs[-1][1].bias.fill_(OUTPUT_BIAS)
            if initialisation == "nearest":
                _pass_colours_through([conv for name, conv in convs if ".RDB" not in name])
    return net.state_dict()


def _pass_colours_through(convs: list[torch.nn.Conv2d]) -> None:
    """Make the convolutions outside the dense blocks (first, trunk end, upsampling, HR, last) carry
    channels 0-2 through their centre taps on top of a small random part; the trunk's last
    convolution (the second) only gets the small random part, so the trunk adds little at first."""
    for index, conv in enumerate(convs):
        conv.weight.mul_(PASS_THROUGH_NOISE)
        conv.bias.zero_()
        if index == 1:
            continue
        centre = conv.kernel_size[0] // 2
        for channel in range(3):
            conv.weight[channel, channel, centre, centre] += 1.0


def new_upscale_model(manager: ModelManager, *, num_filters: int, num_blocks: int, scale: int,
                      seed: int, initialisation: str = "esrgan") -> UpscaleModel:
    """UPSCALE_MODEL of a new ESRGAN held by the model manager; rebuilt from the seed after an eviction."""
    def descriptor() -> Any:
        return registry().load(initial_state(num_filters, num_blocks, scale, seed, initialisation))

    info = describe(descriptor())
    label = f"new ESRGAN x{scale} {num_filters}nf {num_blocks}nb seed {seed}"
    group = ("new_upscale_model", "ESRGAN", num_filters, num_blocks, scale, seed, initialisation)
    ref = ModelRef(group, PART, lambda: {PART: SpandrelModule(descriptor())}, label,
                   policy=LoadPolicy(dtype=compute_dtype(manager, info), compile=False))
    manager.ensure_loaded(ref)
    return UpscaleModel(ref=ref, info=info, name=label)


class InitUpscaleModel(Node):
    category = "training"
    description = ("A new ESRGAN upscaler (RRDBNet, spandrel's architecture) with seeded random weights, for "
                   "TrainESRGAN to train from scratch; the file TrainESRGAN saves loads in Load Upscale Model. "
                   "ESRGAN's published size is 64 filters x 23 blocks; a few blocks of 16-32 filters train on a CPU.")
    inputs = [
        Int("num_filters", 32, min=4, max=256, step=4, tooltip="feature channels (ESRGAN: 64)"),
        Int("num_blocks", 4, min=1, max=64, tooltip="residual-in-residual dense blocks (ESRGAN: 23)"),
        Int("scale", 4, min=2, max=4, step=2, tooltip="upscaling factor: 2 or 4"),
        Int("seed", 0, min=0, max=2**63 - 1, control_after_generate=True),
        Combo("initialisation", list(INITIALISATIONS), default="esrgan", optional=True,
              tooltip="esrgan: the paper's small random init (starts mid-grey); nearest: starts as nearest-neighbour "
              "upscaling and learns the detail (far fewer steps on a CPU)"),
    ]
    outputs = [Output("UPSCALE_MODEL")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        scale = widgets.get("scale")
        if isinstance(scale, int) and scale not in SCALES:
            return f"scale must be one of {', '.join(map(str, SCALES))}, got {scale}"
        return None

    def run(self, ctx: Context, *, num_filters: int, num_blocks: int, scale: int, seed: int,
            initialisation: str | None = None) -> tuple[UpscaleModel]:
        return (new_upscale_model(manager_from(ctx.services), num_filters=num_filters, num_blocks=num_blocks,
                                  scale=scale, seed=seed, initialisation=initialisation or "esrgan"),)


NODES: list[type[Node]] = [InitUpscaleModel]
