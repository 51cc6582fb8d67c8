"""Copy the models ``workflows/train_demo.json`` trained into the bundled demo folder.

``python -m nodes.demo.export BASE`` (BASE: the ``--base`` the training workflow ran with) copies
the checkpoint, the SLAM LoRA and the ESRGAN in fp16 (half the bytes; the loaders compute in fp32
on the CPU), and the scorer folder and its tokenizer as they are (transformers loads a scorer in
the dtype it was saved in, and fp16 on a CPU is slow), into ``nodes/demo/models`` under the names
``workflows/demo.json`` loads. Raises FileNotFoundError naming a file the run did not write,
ModelFileError naming one it cannot read (then nothing is written), ValueError for a target that is
the run's own models folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from nodes.infra.files import read_state_dict, save_safetensors

DEMO_MODELS = Path(__file__).parent / "models"
# (folder, file or folder name) the training workflow writes; the demo workflow loads the same.
HALVED = (("checkpoints", "nodeloom-demo.safetensors"), ("loras", "nodeloom-demo-slam.safetensors"),
          ("upscale_models", "nodeloom-demo-esrgan-x4.safetensors"))
COPIED = (("scorers", "nodeloom-demo-clip"), ("clip_tokenizer", "nodeloom-demo-clip"))


def export(base: Path, target: Path = DEMO_MODELS) -> list[Path]:
    import torch

    models = Path(base) / "models"
    missing = [models / f / n for f, n in HALVED + COPIED if not (models / f / n).exists()]
    if missing:
        raise FileNotFoundError(f"not written by the training run: {', '.join(map(str, missing))}")
    if Path(target).resolve() == models.resolve():  # copying a folder onto itself deletes it first
        raise ValueError(f"the target {target} is the training run's own models folder")
    # Every file is read (so checked) in fp16, metadata kept, before one is written: a corrupt one
    # leaves the target as it was, never this run's checkpoint beside an earlier run's LoRA.
    states = {(folder, name): read_state_dict(models / folder / name, dtype=torch.float16) for folder, name in HALVED}
    written = []
    for (folder, name), (state, metadata) in states.items():
        save_safetensors(state, target / folder / name, metadata or None)
        written.append(target / folder / name)
    for folder, name in COPIED:
        shutil.rmtree(target / folder / name, ignore_errors=True)
        shutil.copytree(models / folder / name, target / folder / name)
        written.append(target / folder / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.demo.export", description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the --base folder workflows/train_demo.json ran in")
    parser.add_argument("--target", type=Path, default=DEMO_MODELS)
    args = parser.parse_args(argv)
    try:
        written = export(args.base, args.target)
    except FileNotFoundError as error:  # a BASE the training workflow has not (fully) run in: say so, no traceback
        print(f"{parser.prog}: {error} (run `nodeloom run workflows/train_demo.json --base {args.base}` first)",
              file=sys.stderr)
        return 1
    except ValueError as error:  # a corrupt file (ModelFileError) or the run's own folder as target
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
