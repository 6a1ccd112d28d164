"""Small RFC 3261 lexical helpers shared by the header-value parsers.

Everything here is a linear scan: the parser sees untrusted input, so no
backtracking regular expressions are used on header values. The only regular
expressions are single character classes (`[...]+` with fullmatch), which run
in linear time in C and are an order of magnitude faster than a Python loop
over the characters.
"""

from __future__ import annotations

import re

from sipsilo.sip.errors import ParseError

# RFC 3261 §25.1 token characters.
TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
WORD_CHARS = TOKEN_CHARS | frozenset('()<>:\\"/[]?{}')
WS = " \t"


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_WORD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+")
HAS_WS = re.compile(r"[ \t]").search


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def is_word(text: str) -> bool:
    return _WORD_RE.fullmatch(text) is not None


def split_quoted(text: str, sep: str, header: str = "header") -> list[str]:
    """Split ``text`` on ``sep`` outside quoted strings and ``<...>``.

    Commas inside a display name or a bracketed URI are not separators, which
    is what makes a naive ``str.split`` wrong for Contact/Route lists.
    """
    if '"' not in text and "<" not in text:
        return text.split(sep)
    parts: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif in_angle:
            if c == ">":
                in_angle = False
        elif c == "<":
            in_angle = True
        elif c == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_quote:
        raise ParseError(400, f"Unterminated quoted string in {header}")
    if in_angle:
        raise ParseError(400, f"Unterminated <> in {header}")
    parts.append(text[start:])
    return parts


def split_list(value: str, header: str = "header") -> list[str]:
    """Split a comma-separated header value into stripped, non-empty elements."""
    return [p.strip() for p in split_quoted(value, ",", header) if p.strip()]


def unquote(text: str, header: str = "header") -> str:
    """Decode a quoted-string (with its surrounding quotes) into its content."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ParseError(400, f"Bad quoted string in {header}")
    inner = text[1:-1]
    if "\\" not in inner:
        if '"' in inner:
            raise ParseError(400, f"Bad quoted string in {header}")
        return inner
    out: list[str] = []
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\":
            i += 1
            if i >= len(inner):
                raise ParseError(400, f"Bad quoted string in {header}")
            out.append(inner[i])
        elif c == '"':
            raise ParseError(400, f"Bad quoted string in {header}")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def quote(text: str) -> str:
    """Encode ``text`` as a quoted-string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(
    text: str, header: str = "header"
) -> list[tuple[str, str | None]]:
    """Parse ``;name=value;flag`` (leading ``;`` optional) into ordered pairs.

    Names are lower-cased (they are case-insensitive); values are kept raw,
    quotes included, so re-serialisation is faithful.
    """
    params: list[tuple[str, str | None]] = []
    if not text.strip():
        return params
    body = text.strip()
    if body.startswith(";"):
        body = body[1:]
    for raw in split_quoted(body, ";", header):
        item = raw.strip(WS)
        if not item:
            raise ParseError(400, f"Empty parameter in {header}")
        name, eq, value = item.partition("=")
        name = name.strip(WS)
        if not is_token(name):
            raise ParseError(400, f"Bad parameter in {header}")
        if eq:
            value = value.strip(WS)
            if not value:
                raise ParseError(400, f"Bad parameter in {header}")
            if value[0] == '"':
                unquote(value, header)
            elif not (is_token(value) or _is_host_value(value)):
                raise ParseError(400, f"Bad parameter in {header}")
            params.append((name.lower(), value))
        else:
            params.append((name.lower(), None))
    return params


def _is_host_value(value: str) -> bool:
    # gen-value = token / host / quoted-string; host adds IPv6 references.
    return value.startswith("[") and value.endswith("]") and all(
        c in "0123456789abcdefABCDEF:." for c in value[1:-1]
    )


def format_params(params: list[tuple[str, str | None]] | tuple[tuple[str, str | None], ...]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def get_param(params: list[tuple[str, str | None]], name: str) -> str | None:
    """Value of ``name``: ``""`` for a flag parameter, None when absent."""
    name = name.lower()
    for k, v in params:
        if k == name:
            return "" if v is None else v
    return None


def set_param(params: list[tuple[str, str | None]], name: str, value: str | None) -> None:
    """Set ``name`` in place (keeping its position) or append it."""
    name = name.lower()
    for i, (k, _) in enumerate(params):
        if k == name:
            params[i] = (name, value)
            return
    params.append((name, value))


def remove_param(params: list[tuple[str, str | None]], name: str) -> None:
    name = name.lower()
    params[:] = [(k, v) for k, v in params if k != name]
