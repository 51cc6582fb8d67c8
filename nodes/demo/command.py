"""``nodeloom demo``: the demo workflow on the bundled demo models, from a prompt.

It is ``nodeloom run workflows/demo.json`` with the prompt, the number of candidates and the seed
set on the workflow's nodes; the bundled models (``nodes/demo/models``) are on every command's
model path (the pack's ``nodeloom_model_paths``). Every ``run`` option (``--out``, ``--base``,
``--device``, ``--no-progress`` …) passes through.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEMO_DIR = Path(__file__).parent
MODELS_YAML = DEMO_DIR / "models" / "extra_model_paths.yaml"
WORKFLOW = DEMO_DIR.parents[1] / "workflows" / "demo.json"
# The demo workflow's nodes the options set (workflows/demo.json).
PROMPT_NODE, LATENT_NODE, SAMPLER_NODE = "2", "5", "6"
DEFAULT_PROMPT = "a red mug on a white background"
# The inputs the demo's own options set, and the option that sets each.
OWNED_INPUTS = {f"{PROMPT_NODE}.value": "--prompt", f"{LATENT_NODE}.batch_size": "--n",
                f"{SAMPLER_NODE}.seed": "--seed"}


def add_command(subparsers: Any) -> None:
    command = subparsers.add_parser("demo", add_help=False,
                                    help="make a product picture from a prompt with the bundled demo models")
    command.set_defaults(handler=run_demo, passthrough=True)


def parser() -> argparse.ArgumentParser:
    own = argparse.ArgumentParser(prog="nodeloom demo", description=(
        "Text -> SLAM 4 steps -> best of N (the trained scorer) -> ESRGAN x4 -> PNG, on the demo models "
        "this project trained (docs/demo.md). Other options are those of `nodeloom run`."))
    own.add_argument("--prompt", default=DEFAULT_PROMPT,
                     help='e.g. "a blue bottle on a yellow background" (colours, shapes and backgrounds: docs/demo.md)')
    own.add_argument("--n", type=int, default=4, help="candidates ranked; the best is upscaled and saved (1-64)")
    own.add_argument("--seed", type=int, default=0)
    return own


def refused(rest: list[str]) -> list[str]:
    """Why the passed-through ``run`` options cannot go with the demo (empty when they can): a
    ``--set`` on an input the demo's own options set (their value would replace it without a word),
    or ``--from-png`` (the demo runs its own workflow). Read as run's parser reads them."""
    passed = argparse.ArgumentParser(add_help=False)
    passed.add_argument("--set", action="append", default=[], nargs="?")  # a bare --set: run's parser says so
    passed.add_argument("--from-png", nargs="?", const="")
    options = passed.parse_known_args(rest)[0]
    targets = [assignment.partition("=")[0] for assignment in options.set if assignment is not None]
    problems = [f"--set {t} is what {OWNED_INPUTS[t]} sets: use {OWNED_INPUTS[t]}" for t in targets if t in OWNED_INPUTS]
    if options.from_png is not None:
        problems.append("the demo runs workflows/demo.json; --from-png belongs to `nodeloom run`")
    return problems


def run_demo(args: argparse.Namespace) -> int:
    from graph_runtime.cli import build_parser

    own, rest = parser().parse_known_args(args.arguments)
    if not 1 <= own.n <= 64:
        print(f"nodeloom demo: --n must be 1 to 64, got {own.n}", file=sys.stderr)
        return 2
    problems = refused(rest)
    for problem in problems:
        print(f"nodeloom demo: {problem}", file=sys.stderr)
    if problems:
        return 2
    if not WORKFLOW.is_file() or not MODELS_YAML.is_file():
        print(f"nodeloom demo: {WORKFLOW} or {MODELS_YAML} is missing: the demo runs from a source checkout "
              "(pip install -e .)", file=sys.stderr)
        return 2
    sets = [f"{PROMPT_NODE}.value={json.dumps(own.prompt)}", f"{LATENT_NODE}.batch_size={own.n}",
            f"{SAMPLER_NODE}.seed={own.seed}"]
    argv = ["run", str(WORKFLOW), *rest]
    for assignment in sets:
        argv += ["--set", assignment]
    run_args = build_parser(args.registry).parse_args(argv)
    return int(run_args.handler(run_args))
