"""ComfyUI's prompt weighting syntax and 77-token chunking, independent of any model.

``(word)`` multiplies the weight by 1.1 per level, ``(word:1.3)`` sets it, ``\\(`` and ``\\)`` are
literal brackets. Prompts longer than one CLIP window are split into chunks of 75 tokens (plus
start and end tokens), breaking between words unless a word is very long, as ComfyUI does.
"""

from __future__ import annotations

from collections.abc import Callable

WeightedTokens = list[tuple[int, float]]

_ESCAPES = (("\\)", "\0\1"), ("\\(", "\0\2"))
MAX_WORD_TOKENS = 8  # a word longer than this may be split across chunks


def parse_weights(text: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """Split ``text`` into (segment, weight) pairs."""
    for literal, placeholder in _ESCAPES:
        text = text.replace(literal, placeholder)
    return [(_unescape(s), w) for s, w in _token_weights(text, weight)]


def _unescape(text: str) -> str:
    return text.replace("\0\1", ")").replace("\0\2", "(")


def _split_parentheses(text: str) -> list[str]:
    parts: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0:
                if current:
                    parts.append(current)
                current = "("
            else:
                current += char
            depth += 1
        elif char == ")" and depth > 0:
            depth -= 1
            current += char
            if depth == 0:
                parts.append(current)
                current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts


def _token_weights(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for part in _split_parentheses(text):
        if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
            inner = part[1:-1]
            inner_weight = weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass  # "(a:b)" without a number: a plain emphasis
            out += _token_weights(inner, inner_weight)
        else:
            out.append((part, weight))
    return out


def chunk_tokens(text: str, encode_word: Callable[[str], list[int]], *, bos: int, eos: int, pad: int,
                 max_length: int = 77) -> list[WeightedTokens]:
    """Weighted token windows of exactly ``max_length``: [BOS, ≤75 tokens, EOS, pads]."""
    words: list[WeightedTokens] = []
    for segment, weight in parse_weights(text):
        for word in segment.replace("\n", " ").split(" "):
            if word:
                words.append([(token, weight) for token in encode_word(word)])
    chunks: list[WeightedTokens] = []
    chunk: WeightedTokens = [(bos, 1.0)]
    for group in words:
        large = len(group) >= MAX_WORD_TOKENS
        while group:
            if len(chunk) + len(group) > max_length - 1:
                room = max_length - 1 - len(chunk)
                if large:
                    chunk.extend(group[:room])
                    group = group[room:]
                chunks.append(_close(chunk, eos, pad, max_length))
                chunk = [(bos, 1.0)]
            else:
                chunk.extend(group)
                group = []
    chunks.append(_close(chunk, eos, pad, max_length))
    return chunks


def _close(chunk: WeightedTokens, eos: int, pad: int, max_length: int) -> WeightedTokens:
    return chunk + [(eos, 1.0)] + [(pad, 1.0)] * (max_length - len(chunk) - 1)
