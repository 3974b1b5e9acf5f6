"""Structure-aware mutation of JSON messages: the strange values, shapes and texts a
hostile client can send. Used by the protocol fuzzer (tests/fuzz) and as the custom
mutator of the ``message`` target (fuzz/run.py).

Values are built as Python trees and written with :meth:`Mutator.text`; a
:class:`Raw` leaf is written verbatim, for what ``json.dumps`` cannot produce
(numbers of 5,000 digits, nesting deeper than the recursion limit).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is."""

    text: str


def nested(depth: int, leaf: str = "1", *, objects: bool = False) -> Raw:
    if objects:
        return Raw('{"a":' * depth + leaf + "}" * depth)
    return Raw("[" * depth + leaf + "]" * depth)


STRINGS = [
    "", " ", "\u0000", "\ud800", "\udfff", "\U0001f600" * 3, "\u202e\u0635\u0648\u062a",
    "\u200b", "e\u0301", "\ufeff", "\uffff", "a\r\nb", "\\", '"', "null", "NaN", "-1",
    "PA_", "TR_", "PA_" + "x" * 12, "<script>", "%s%n", "../../etc/passwd", "*",
    "x" * 16, "x" * 17, "x" * 32, "x" * 33, "x" * 64, "x" * 65, "x" * 128, "x" * 129,
    "x" * 256, "x" * 257, "\u00e9" * 257, "x" * 1024, "x" * 1025,
]
"""Strings at every documented limit and one past it, and awkward characters. Lone
surrogates (``\\ud800``) are written as JSON escapes, the only way a client can send
them in UTF-8 text."""

NUMBERS: list[Any] = [
    0, -1, 1, 2, 7, -0.0, 0.5, 1e-320, 1.7976931348623157e308, 2**31, 2**32, 2**53 + 1,
    2**63, 2**64, -(2**63) - 1, 10**300, float("nan"), float("inf"), float("-inf"),
    Raw("1e999"), Raw("-1e999"), Raw("1" * 4301), Raw("1" + "0" * 5000), Raw("1.0e+400"),
]
"""Large, tiny, negative and non-finite numbers (NaN and Infinity are not JSON, but
Python's parser reads them; ``4301`` digits is past Python's int conversion limit)."""


class Mutator:
    """Random, reproducible (seeded) mutations of JSON values and texts."""

    def __init__(self, rng: random.Random, *, max_depth: int = 5000) -> None:
        self.rng = rng
        self.max_depth = max_depth

    # -- values -------------------------------------------------------------
    def odd_value(self) -> Any:
        """One strange value of any JSON type."""
        rng = self.rng
        pick = rng.random()
        if pick < 0.3:
            return rng.choice(STRINGS)
        if pick < 0.55:
            return rng.choice(NUMBERS)
        if pick < 0.65:
            return rng.choice([None, True, False, [], {}, [None], {"": None}])
        if pick < 0.8:
            # Around the recursion limit (1000) a value may parse, yet fail to be written
            # again deeper in the stack: every depth there, not a few round numbers.
            depth = rng.choice([2, 10, 100, 500, rng.randint(850, 1000), rng.randint(850, 1000),
                                1100, self.max_depth])
            return nested(depth, objects=rng.random() < 0.3)
        if pick < 0.9:
            return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 40)))
        return [self.odd_value() for _ in range(rng.randrange(1, 4))]

    def mutate(self, message: dict[str, Any], protected: dict[str, Any] | None = None) -> Any:
        """1 to 3 field-level mutations of ``message`` (a copy). ``protected`` maps a
        field to the values it may take instead of an odd one (it is never dropped)."""
        rng = self.rng
        out = dict(message)
        protected = protected or {}
        for _ in range(rng.randint(1, 3)):
            keys = list(out)
            choice = rng.random()
            if keys and choice < 0.2:
                key = rng.choice(keys)
                if key in protected:
                    out[key] = rng.choice(protected[key])
                else:
                    del out[key]
            elif keys and choice < 0.65:
                key = rng.choice(keys)
                out[key] = rng.choice(protected[key]) if key in protected else self.odd_value()
            elif choice < 0.8:
                out[rng.choice(["x", "extra", "__proto__", "constructor", "ID", "Type", "\u0000",
                                "type ", "a" * 300])] = self.odd_value()
            elif keys and choice < 0.9:
                key = rng.choice(keys)
                out[key] = [out[key]] if rng.random() < 0.5 else {"value": out[key]}
            else:
                return rng.choice([[out], "message", 1, None, [], rng.choice(NUMBERS)])
        return out

    # -- text ---------------------------------------------------------------
    def text(self, value: Any) -> str:
        """``value`` as JSON text; Raw leaves verbatim, NaN and Infinity as Python writes them."""
        raws: dict[str, str] = {}

        def swap(node: Any) -> Any:
            if isinstance(node, Raw):
                marker = f"@@raw{len(raws)}@@"
                raws[f'"{marker}"'] = node.text
                return marker
            if isinstance(node, dict):
                return {k: swap(v) for k, v in node.items()}
            if isinstance(node, list):
                return [swap(v) for v in node]
            return node

        text = json.dumps(swap(value), ensure_ascii=self.rng.random() < 0.5)
        # A lone surrogate cannot be UTF-8: write it as the JSON escape it came from.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        for marker, raw in raws.items():
            text = text.replace(marker, raw)
        return text

    def mangle(self, text: str) -> str:
        """A text-level mutation: truncated, a duplicated key, flipped or spliced bytes."""
        rng = self.rng
        choice = rng.random()
        if not text:
            return rng.choice(["{", "}", " ", "\u0000"])
        if choice < 0.3:
            return text[:rng.randrange(len(text))]
        if choice < 0.45 and text.startswith("{") and text.endswith("}"):
            key = rng.choice(['"type"', '"id"', '"payload"', '"token"', '"sdp"'])
            return text[:-1] + f",{key}:{self.text(self.odd_value())}}}"
        if choice < 0.7:
            chars = list(text)
            for _ in range(rng.randint(1, 4)):
                chars[rng.randrange(len(chars))] = chr(rng.choice([0, 0x22, 0x5C, 0x7B, 0x7D,
                                                                  0x5B, 0x3A, 0x2C, 0xD7FF,
                                                                  rng.randrange(0x20, 0x7F)]))
            return "".join(chars)
        if choice < 0.85:
            at = rng.randrange(len(text))
            return text[:at] + rng.choice(["NaN", "\\ud800", '"', "\\", "[", "}", ",", ":",
                                           "\\u", "-", "1e", "tru", "\u2028"]) + text[at:]
        return rng.choice(["", " ", "[]", "null", "1", '"x"', "{}", "{" * 50, "\ufeff{}",
                           " {} ", "{}{}", '{"type":"ping"} x'])
