"""Small torch-free nodes for the server tests: constants, a PNG writer, a slow node with previews,
a long-running one, a failing node, one that crashes its process and a model-file "loader"."""

from __future__ import annotations

import io
import os
import signal
import time

from PIL import Image

from graph_runtime import Boolean, Float, Int, Link, ModelFile, Node, Output, Preview, Result, String, hookimpl


def _png(color: tuple[int, int, int], size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


class TestColor(Node):
    category = "testing"
    description = "An RGB colour from three ints."
    inputs = [Int("red", 0, min=0, max=255), Int("green", 0, min=0, max=255), Int("blue", 0, min=0, max=255)]
    outputs = [Output("COLOR", "color")]

    def run(self, ctx, *, red, green, blue):
        return ((red, green, blue),)


class TestSave(Node):
    category = "testing"
    description = "Write the colour as a PNG under output/."
    output_node = True
    inputs = [Link("color", "COLOR"), String("filename_prefix", "test", path_in="output"), Int("size", 8, min=1, max=512)]

    def run(self, ctx, *, color, filename_prefix, size):
        folder = ctx.folders.output_dir
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{filename_prefix}_{ctx.prompt_id[:8]}_{ctx.node_id}.png"
        (folder / name).write_bytes(_png(color, size))
        return Result(ui={"images": [{"filename": name, "subfolder": "", "type": "output"}]})


class TestSlow(Node):
    category = "testing"
    description = "Takes `steps` × `delay` seconds, reporting progress with a preview each step."
    output_node = True
    not_idempotent = True
    inputs = [Int("steps", 3, min=1, max=10000), Float("delay", 0.05, min=0.0, max=10.0),
              Boolean("previews", True)]

    def run(self, ctx, *, steps, delay, previews):
        for step in range(steps):
            time.sleep(delay)
            preview = Preview("PNG", _png((step * 20 % 256, 0, 0))) if previews else None
            ctx.progress(step + 1, steps, preview)
        return Result(ui={"text": [f"{steps} steps"]})


class TestLong(TestSlow):
    description = "TestSlow declared long-running: the scheduler keeps it off the worker short prompts need."
    long_running = True


class TestFail(Node):
    category = "testing"
    output_node = True
    inputs = [String("message", "boom")]

    def run(self, ctx, *, message):
        raise ValueError(message)


class TestCrash(Node):
    category = "testing"
    description = "Kills its own process, as a segfaulting extension would."
    output_node = True
    not_idempotent = True
    inputs = [Int("seed", 0)]

    def run(self, ctx, *, seed):
        os.kill(os.getpid(), signal.SIGSEGV)
        return Result()


class TestModel(Node):
    category = "testing"
    description = "Reads a checkpoint file as a loader would; reports its first bytes and the worker pid."
    output_node = True
    not_idempotent = True
    inputs = [ModelFile("ckpt_name", "checkpoints")]

    def run(self, ctx, *, ckpt_name):
        head = ctx.folders.model_path("checkpoints", ckpt_name).read_bytes()[:32].decode()
        return Result(ui={"text": [head, str(os.getpid())]})


@hookimpl
def nodeloom_register_nodes():
    return [TestColor, TestSave, TestSlow, TestLong, TestFail, TestCrash, TestModel]


@hookimpl
def nodeloom_register_types():
    return {"COLOR": "an RGB colour as three ints in 0..255"}
