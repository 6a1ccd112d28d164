"""Which worker process a datagram belongs to (``[server] workers`` > 1).

One process reads every UDP datagram and hands it to a worker without parsing
it as SIP; everything that must meet in one process gets the same answer here:

* A request goes by the user part of its target: the Request-URI's, or the To
  URI's for a REGISTER (its Request-URI names only the domain). So bob's
  REGISTER, every MESSAGE and INVITE to bob, their retransmissions, their
  CANCELs and non-2xx ACKs (same Request-URI, RFC 3261 §9.1 and §17.1.1.3) all
  reach bob's worker, which holds his dump, his delivery claims and the
  messages pending for him: "one at a time, in order" needs no cross-process
  coordination.
* A response goes by its top Via branch, which the worker that sent the request
  marked with its number (sip.ids.loop_branch's tag).
* Anything else (a response to a request we did not send, bytes that are not
  SIP) goes by a hash of its first line: the same bytes always go to the same
  worker, and that worker answers or drops them as a single server would.

Pure functions on bytes; the hash is CRC-32, the same in every process.
"""

from __future__ import annotations

import re
import zlib
from urllib.parse import unquote_to_bytes

from sipsilo.sip.ids import BRANCH_MAGIC, BRANCH_TAG_OFFSET

_VIA = re.compile(rb"\n(?:via|v)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_TO = re.compile(rb"\n(?:to|t)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_BRANCH = re.compile(rb";[ \t]*branch[ \t]*=[ \t]*([^;, \t]+)", re.IGNORECASE)
_FOLD = re.compile(rb"\r?\n[ \t]+")
_QUOTED = re.compile(rb'"(?:[^"\\]|\\.)*"')
# user part of a sip:/sips: URI; a URI without "@" has none
_USER = re.compile(rb"sips?:([^@>\s]*)@", re.IGNORECASE)


def worker_for(data: bytes, workers: int, token: str) -> int:
    """The index (0 .. workers-1) of the worker that handles *data*.

    *token* is the branch token every worker puts in its branches.
    """
    if workers <= 1:
        return 0
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: CRLFs before the start line
    if b"\n " in data or b"\n\t" in data:
        data = _unfold(data)
    eol = data.find(b"\n")
    first = data if eol < 0 else data[:eol]
    if first[:4].upper() == b"SIP/":
        return _response_worker(data, workers, token, first)
    parts = first.split(b" ", 2)
    if len(parts) < 2:
        return zlib.crc32(first) % workers
    target = parts[1]
    if parts[0] == b"REGISTER":
        m = _TO.search(data)
        if m is not None:
            target = _uri_of(m.group(1))
    m = _USER.search(target)
    key = m.group(1) if m is not None else target
    if b"%" in key:
        key = unquote_to_bytes(key)
    return zlib.crc32(key) % workers


def _response_worker(data: bytes, workers: int, token: str, first: bytes) -> int:
    via = _VIA.search(data)
    if via is not None:
        top = via.group(1).split(b",", 1)[0]
        branch = _BRANCH.search(top)
        if branch is not None:
            value = branch.group(1)
            mark = f"{BRANCH_MAGIC}{token}.".encode()
            if value.startswith(mark):
                tag = value[BRANCH_TAG_OFFSET:BRANCH_TAG_OFFSET + 2]
                try:
                    index = int(tag, 16)
                except ValueError:
                    index = -1
                if 0 <= index < workers:
                    return index
            return zlib.crc32(value) % workers
    return zlib.crc32(first) % workers


def _unfold(data: bytes) -> bytes:
    """The header block with folded lines joined (RFC 3261 §7.3.1), body as is."""
    end = data.find(b"\r\n\r\n")
    end = len(data) if end < 0 else end
    return _FOLD.sub(b" ", data[:end]) + data[end:]


def _uri_of(value: bytes) -> bytes:
    """The URI of a name-addr or addr-spec header value (a quoted display name
    may itself look like a URI: '"sip:x@y" <sip:bob@example.com>')."""
    if b'"' in value:
        value = _QUOTED.sub(b"", value)
    lt = value.find(b"<")
    if lt >= 0:
        gt = value.find(b">", lt)
        return value[lt + 1:gt if gt > 0 else len(value)]
    return value.split(b";", 1)[0]


def tag_for(index: int) -> str:
    """The branch tag of worker *index* (two hex digits, see loop_branch)."""
    if not 0 <= index < 256:
        raise ValueError(f"worker index {index} out of range")
    return f"{index:02x}"
