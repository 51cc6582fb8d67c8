"""Per-block weights written as patterns over diffusers UNet parameter names (FuseModelsLayerwise).

Syntax, one rule per line (blank lines and ``#`` comments are skipped)::

    up_blocks.*.attentions: 0.8      # every attention module of every up block
    mid_block: 0.5
    down_blocks.[12].resnets: 0.1    # fnmatch inside one segment

- A pattern is dot-separated segments matched against the leading segments of a parameter name,
  whole segment by whole segment (``up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight``
  is matched by ``up_blocks``, ``up_blocks.*.attentions``, ``up_blocks.1.attentions.0``, …). A
  segment is a literal name or index, ``*`` (any one segment), or an fnmatch glob confined to the
  segment (``attn*``, ``[01]``).
- The weight is a number in [0, 1].
- When several patterns match a parameter, the most specific decides: the longest (most
  segments), then the one with more literal segments (``up_blocks.1`` beats ``up_blocks.*``). Two
  equally specific patterns with different weights matching one parameter are ambiguous: an error.
- Errors (:class:`PatternError`): a line that is not ``pattern: weight``, an empty segment, a weight
  outside [0, 1], a pattern given twice (at parse time, so at validation); a pattern that matches
  no parameter of the model, or only parameters that more specific patterns decide, and ambiguity (when
  the patterns meet the model).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

_LINE = re.compile(r"^\s*(?P<pattern>[^:#]+?)\s*:\s*(?P<weight>[^#]*?)\s*(#.*)?$")


class PatternError(ValueError):
    """A block-weight rule that is malformed, matches nothing, or contradicts another."""


@dataclass(frozen=True)
class Rule:
    pattern: str
    weight: float
    line: int

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.pattern.split("."))

    @property
    def specificity(self) -> tuple[int, int]:
        """(segments, literal segments): the larger decides where patterns overlap."""
        return len(self.segments), sum(not any(c in s for c in "*?[") for s in self.segments)

    def matches(self, name: str) -> bool:
        parts = name.split(".")
        return len(parts) >= len(self.segments) and all(
            fnmatch.fnmatchcase(part, segment) for part, segment in zip(parts, self.segments))


def parse_rules(text: str) -> list[Rule]:
    """The rules of ``text`` in order; raises PatternError naming the line and what is wrong."""
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.split("#", 1)[0].strip():
            continue
        match = _LINE.match(raw)
        if match is None:
            raise PatternError(f"line {number} {raw.strip()!r} is not 'pattern: weight' (e.g. 'up_blocks.*.attentions: 0.8')")
        pattern, weight_text = match.group("pattern"), match.group("weight")
        if any(not segment.strip() or segment != segment.strip() for segment in pattern.split(".")):
            raise PatternError(f"line {number}: pattern {pattern!r} has an empty or padded segment; write names "
                               "separated by single dots, e.g. 'up_blocks.*.attentions'")
        try:
            weight = float(weight_text)
        except ValueError:
            raise PatternError(f"line {number}: weight {weight_text!r} of {pattern!r} is not a number") from None
        if not math.isfinite(weight) or not 0.0 <= weight <= 1.0:
            raise PatternError(f"line {number}: weight {weight_text} of {pattern!r} is outside [0, 1]")
        if pattern in seen:
            raise PatternError(f"line {number}: pattern {pattern!r} is given twice (lines {seen[pattern]} and {number})")
        seen[pattern] = number
        rules.append(Rule(pattern, weight, number))
    return rules


def resolve_weights(rules: list[Rule], names: Iterable[str], default: float) -> dict[str, float]:
    """Parameter name -> weight: the most specific matching rule's, else ``default``. Raises PatternError
    for ambiguity, and for rules that match nothing or decide nothing (naming the model's blocks)."""
    names = list(names)
    weights: dict[str, float] = {}
    deciding: set[Rule] = set()
    matched: set[Rule] = set()
    for name in names:
        hits = [rule for rule in rules if rule.matches(name)]
        matched.update(hits)
        if not hits:
            weights[name] = default
            continue
        best = max(rule.specificity for rule in hits)
        winners = [rule for rule in hits if rule.specificity == best]
        if len({rule.weight for rule in winners}) > 1:
            listed = " and ".join(f"{r.pattern!r} ({r.weight})" for r in winners)
            raise PatternError(f"patterns {listed} both match {name} and are equally specific: make one more "
                               "specific or give them the same weight")
        weights[name] = winners[0].weight
        deciding.update(winners)
    for rule in rules:
        if rule not in matched:
            raise PatternError(f"pattern {rule.pattern!r} (line {rule.line}) matches no parameter of the UNet; its "
                               f"blocks are {', '.join(block_names(names))}")
        if rule not in deciding:
            raise PatternError(f"pattern {rule.pattern!r} (line {rule.line}) has no effect: every parameter it "
                               "matches is decided by a more specific pattern")
    return weights


def block_names(names: Iterable[str]) -> list[str]:
    """The UNet's top-level blocks as patterns would name them (``down_blocks.0``, ``mid_block``, …)."""
    blocks: dict[str, None] = {}
    for name in names:
        parts = name.split(".")
        blocks[".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]] = None
    return list(blocks)
