"""What counts as text: valid Unicode with at least one visible character.

Input files and requests are hostile in ways `str.strip()` does not see: a cell of zero-width spaces or
NUL bytes looks empty to a reader but not to `strip`, and a lone surrogate (an unpaired `\\ud800` JSON
escape, or an invalid UTF-8 byte kept by the `surrogateescape` decoder) is a `str` that no tokenizer,
hash or UTF-8 file can take. Every reader and the server judge texts with these two functions.
"""

from __future__ import annotations

import unicodedata
from typing import Any

# Control, format (zero-width space, BOM, joiners...) and separator characters show nothing.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def is_blank(text: str) -> bool:
    """True when `text` has no visible character (empty, whitespace, `\\u200b`, `\\ufeff`, `\\x00`...)."""
    return all(char.isspace() or unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in text)


def unicode_problem(text: str) -> str | None:
    """Why `text` is not valid Unicode (it holds a surrogate code point), or None when it is."""
    for index, char in enumerate(text):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # what `surrogateescape` makes of an undecodable byte
            return f"is not valid UTF-8 (byte 0x{code - 0xDC00:02x} at character {index})"
        if 0xD800 <= code <= 0xDFFF:
            return f"holds a lone surrogate (U+{code:04X} at character {index}), which is not valid Unicode"
    return None


def find_invalid_text(value: Any) -> tuple[str, str] | None:
    """The first string inside `value` (a row: dicts, lists, strings; keys too) that is not valid Unicode,
    as (its field path, the problem); None when all are valid. Iterative: rows may be nested deeply."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = unicode_problem(item)
            if problem:
                return path or "value", problem
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):  # reversed: the stack pops the first field first
                key_text = str(key)
                problem = unicode_problem(key_text)
                if problem:
                    return path or "column name", f"a column name {problem}"
                stack.append((f"{path}.{key_text}" if path else key_text, child))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{index}]", child) for index, child in reversed(list(enumerate(item))))
    return None
