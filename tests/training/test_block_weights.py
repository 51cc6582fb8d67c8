"""The block-weight pattern syntax: parsing errors name the line, matching picks the longest pattern."""

from __future__ import annotations

import pytest

from nodes.training.block_weights import PatternError, block_names, parse_rules, resolve_weights

NAMES = ["conv_in.weight", "down_blocks.0.attentions.0.proj_in.weight", "down_blocks.1.resnets.0.conv1.weight",
         "mid_block.attentions.0.proj_in.weight", "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight",
         "up_blocks.1.attentions.0.proj_out.bias", "up_blocks.1.resnets.2.conv1.weight"]


def test_longest_pattern_wins_and_globs_stay_in_one_segment() -> None:
    rules = parse_rules("up_blocks.*.attentions: 0.8\nup_blocks.1.attentions.0: 0.5  # finer\n"
                        "down_blocks.[01].att*: 0.1\n\n")
    got = resolve_weights(rules, NAMES, 0.3)
    assert got == {"conv_in.weight": 0.3, "down_blocks.0.attentions.0.proj_in.weight": 0.1,
                   "down_blocks.1.resnets.0.conv1.weight": 0.3, "mid_block.attentions.0.proj_in.weight": 0.3,
                   "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight": 0.8,
                   "up_blocks.1.attentions.0.proj_out.bias": 0.5, "up_blocks.1.resnets.2.conv1.weight": 0.3}


def test_a_pattern_matches_whole_segments_only() -> None:
    with pytest.raises(PatternError, match="'up_block' .* matches no parameter"):
        resolve_weights(parse_rules("up_block: 0.5"), NAMES, 0.3)


def test_a_literal_segment_beats_a_wildcard_of_the_same_length() -> None:
    got = resolve_weights(parse_rules("up_blocks.*.attentions: 0.8\nup_blocks.1.attentions: 0.4"), NAMES, 0.3)
    assert got["up_blocks.1.attentions.0.proj_out.bias"] == 0.4
    assert got["up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight"] == 0.8


def test_equally_specific_patterns_with_other_weights_are_ambiguous() -> None:
    with pytest.raises(PatternError, match="patterns 'up_blocks.\\*' \\(0.5\\) and '\\*.1' \\(0.2\\) both match "
                                           "up_blocks.1.attentions.0.proj_out.bias and are equally specific"):
        resolve_weights(parse_rules("up_blocks.*: 0.5\n*.1: 0.2"), NAMES, 0.3)


def test_same_length_patterns_with_one_weight_are_not_ambiguous() -> None:
    got = resolve_weights(parse_rules("up_blocks.1: 0.6\n*.1: 0.6"), NAMES, 0.0)
    assert got["up_blocks.1.resnets.2.conv1.weight"] == 0.6 and got["down_blocks.1.resnets.0.conv1.weight"] == 0.6


@pytest.mark.parametrize(("text", "message"), [
    ("up_blocks.*.attentions 0.8", "line 1 'up_blocks.\\*.attentions 0.8' is not 'pattern: weight'"),
    ("mid_block: 0.2\nup_blocks..attentions: 0.8", "line 2: pattern 'up_blocks..attentions' has an empty"),
    ("up_blocks: high", "line 1: weight 'high' of 'up_blocks' is not a number"),
    ("up_blocks: -0.1", "outside \\[0, 1\\]"),
    ("up_blocks: nan", "outside \\[0, 1\\]"),
    ("up_blocks: 0.1\nup_blocks: 0.2", "line 2: pattern 'up_blocks' is given twice \\(lines 1 and 2\\)"),
])
def test_malformed_rules_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PatternError, match=message):
        parse_rules(text)


def test_block_names_list_top_level_blocks() -> None:
    assert block_names(NAMES) == ["conv_in", "down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1"]
