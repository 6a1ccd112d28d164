"""Turning bytes into messages: datagram parsing and stream framing."""

from __future__ import annotations

from sipsilo.sip.dates import parse_rfc1123
from sipsilo.sip.errors import ParseError
from sipsilo.sip.grammar import is_token
from sipsilo.sip.headers import _CANONICAL, Headers
from sipsilo.sip.message import Request, Response
from sipsilo.sip.uri import SipUri, parse_uri

# Request-URI schemes this server can route; anything else is answered 416
# (RFC 3261 §8.2.2.1).
DEFAULT_SCHEMES = frozenset({"sip", "sips", "tel"})

_MAX_CONTENT_LENGTH_DIGITS = 10
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards")


def _split_head(data: bytes) -> tuple[int, int, int]:
    """(start of start line, end of header block, start of body)."""
    start = 0
    n = len(data)
    # RFC 3261 §7.5: CRLFs before the start line are ignored.
    while start < n and data[start] in b"\r\n":
        start += 1
    if start >= n:
        raise ParseError(400, "Empty message", answerable=False)
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        return start, end, end + 4
    end = data.find(b"\n\n", start)
    if end >= 0:
        return start, end, end + 2
    raise ParseError(400, "Missing empty line after headers", answerable=False)


def _split_headers(lines: list[str]) -> list[tuple[str, str, str]]:
    entries: list[tuple[str, str, str]] = []
    canonical = _CANONICAL
    for line in lines:
        if not line:
            raise ParseError(400, "Malformed header line", answerable=False)
        first = line[0]
        if first == " " or first == "\t":
            # Line folding (RFC 3261 §7.3.1): continuation joins with one SP.
            if not entries:
                raise ParseError(400, "Malformed header line", answerable=False)
            k, name, value = entries[-1]
            entries[-1] = (k, name, (value + " " + line.strip(" \t")).strip(" \t"))
            continue
        colon = line.find(":")
        if colon <= 0:
            raise ParseError(400, "Malformed header line", answerable=False)
        raw_name = line[:colon].rstrip(" \t")
        low = raw_name.lower()
        known = canonical.get(low)
        if known is None or not raw_name.isascii():
            # A name we know is a token already (the ASCII check: "\u212a".lower()
            # is "k"); only the others need the character check.
            if not is_token(raw_name):
                raise ParseError(400, "Malformed header name", answerable=False)
            known = canonical.get(low, raw_name)
        name = known
        entries.append((name.lower(), name, line[colon + 1 :].strip(" \t")))
    return entries


def _parse_head(data: bytes) -> tuple[str, Headers, int]:
    start, end, body_start = _split_head(data)
    head = data[start:end].decode("utf-8", "surrogateescape")
    if "\n" in head.replace("\r\n", ""):
        lines = [ln.rstrip("\r") for ln in head.split("\n")]
    else:
        lines = head.split("\r\n")
    return lines[0], Headers._from_canonical(_split_headers(lines[1:])), body_start


def error_response(data: bytes, error: ParseError) -> Response | None:
    """The response to send for a request that failed with ``error``.

    None when the error is not answerable or ``data`` is not a request. The
    reason phrase is the error's, so the sender learns what was wrong.
    """
    if not error.answerable:
        return None
    try:
        start_line, headers, _ = _parse_head(data)
        if start_line[:4].upper() == "SIP/" or "Via" not in headers:
            return None
        return Request("ERROR", "invalid:", headers).make_response(error.status, error.reason)
    except ParseError:
        return None


_MANDATORY = tuple((n, n.lower()) for n in ("Via", "From", "To", "Call-ID", "CSeq"))


def _check_mandatory(msg: Request | Response) -> ParseError | None:
    """First problem with Via/From/To/Call-ID/CSeq, or None when all usable.

    A response only needs the raw From/To/Call-ID/CSeq lines (they are copied,
    not re-serialised) and a parseable top Via to be routed back, so a bad
    *value* in the others still leaves the error answerable.
    """
    # One pass over the header list instead of a scan per mandatory name.
    counts: dict[str, int] = {}
    for key, _, _ in msg.headers._items:
        counts[key] = counts.get(key, 0) + 1
    for name, key in _MANDATORY:
        if key not in counts:
            return ParseError(400, f"Missing {name} header", answerable=False)
    try:
        if not msg.vias:
            return ParseError(400, "Missing Via header", answerable=False)
    except ParseError as exc:
        return ParseError(exc.status, exc.reason, answerable=False)
    for name in _SINGLE:
        if counts.get(name.lower(), 0) > 1:
            return ParseError(400, f"Multiple {name} headers")
    try:
        if isinstance(msg, Request):
            # A response is only matched (Via, CSeq) and relayed: its From and
            # To are parsed if and when someone reads them.
            msg.from_  # noqa: B018 - parse now so a bad value is caught here
            msg.to  # noqa: B018
        msg.call_id  # noqa: B018
        msg.cseq  # noqa: B018
    except ParseError as exc:
        return ParseError(exc.status, exc.reason)
    return None


def _check_optional(msg: Request) -> None:
    """Validate the structured headers that are optional but must be sane."""
    msg.max_forwards  # noqa: B018 - raises on a non-numeric value
    if "Contact" in msg.headers:
        msg.contacts  # noqa: B018
    date = msg.headers.get("Date")
    if date is not None:
        parse_rfc1123(date)


def _head_is_utf8(data: bytes, body_start: int) -> bool:
    """Whether the start line and headers are UTF-8 (RFC 3261 §25.1: TEXT-UTF8).

    The head is decoded with surrogateescape so that the error answer can
    still echo it, but a lone surrogate cannot be encoded again by anything
    downstream (hashing a To tag, digest, the database): such a request is
    refused here instead of failing deep inside a route.
    """
    head = data[:body_start]
    if head.isascii():  # the common case, checked in C
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _content_length(h: Headers) -> int | None:
    lines = h.get_lines("Content-Length")
    if not lines:
        return None
    values = {v.strip() for v in lines}
    if len(values) > 1:
        raise ParseError(400, "Multiple Content-Length headers")
    value = values.pop()
    if not value.isdigit() or not value.isascii():
        raise ParseError(400, "Bad Content-Length header")
    if len(value.lstrip("0")) > _MAX_CONTENT_LENGTH_DIGITS:
        raise ParseError(400, "Bad Content-Length header")
    return int(value)


def _parse_request_line(line: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise ParseError(400, "Bad request line")
    method, uri_text, version = parts
    if not is_token(method):
        raise ParseError(400, "Bad request method")
    if version.upper() != "SIP/2.0":
        if version.upper().startswith("SIP/"):
            raise ParseError(505, "Version Not Supported")
        raise ParseError(400, "Bad request line")
    return method, uri_text


def parse_message(
    data: bytes, *, schemes: frozenset[str] = DEFAULT_SCHEMES, stream: bool = False
) -> Request | Response:
    """Parse one complete message (a datagram, or one framed stream message).

    With ``stream=False`` (UDP) a missing Content-Length means the body is the
    rest of the datagram, and extra bytes beyond Content-Length are dropped
    (RFC 3261 §18.3); with ``stream=True`` a Content-Length is mandatory.
    """
    start_line, headers, body_start = _parse_head(data)
    msg: Request | Response
    if start_line[:4].upper() == "SIP/":
        msg = _response(start_line, headers)
        problem = _check_mandatory(msg)
        if problem is not None:
            # Responses are never answered, only dropped.
            raise ParseError(problem.status, problem.reason, answerable=False)
    else:
        req, line_error = _request(start_line, headers, schemes)
        msg = req
        problem = _check_mandatory(req)
        if problem is not None:
            raise problem
        if line_error is not None:
            raise line_error
        if req.cseq[1] != req.method:
            raise ParseError(400, "CSeq method does not match request method")
        if not _head_is_utf8(data, body_start):
            raise ParseError(400, "Invalid UTF-8 in headers")
        _check_optional(req)
    length = _content_length(headers)
    body = data[body_start:]
    if length is None:
        if stream:
            raise ParseError(400, "Missing Content-Length header",
                             answerable=isinstance(msg, Request))
    elif length > len(body):
        raise ParseError(400, "Content-Length mismatch", answerable=isinstance(msg, Request))
    else:
        body = body[:length]
    msg.body = body
    return msg


def _response(line: str, headers: Headers) -> Response:
    parts = line.split(" ", 2)
    if len(parts) < 2:
        raise ParseError(400, "Bad status line", answerable=False)
    if parts[0].upper() != "SIP/2.0":
        raise ParseError(505, "Version Not Supported", answerable=False)
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or not code.isascii():
        raise ParseError(400, "Bad status code", answerable=False)
    status = int(code)
    if not 100 <= status <= 699:
        raise ParseError(400, "Bad status code", answerable=False)
    return Response(status, parts[2] if len(parts) == 3 else "", headers)


def _request(
    line: str, headers: Headers, schemes: frozenset[str]
) -> tuple[Request, ParseError | None]:
    # A start-line problem is returned, not raised: whether it can be
    # answered depends on the mandatory headers, checked afterwards.
    try:
        method, uri_text = _parse_request_line(line)
    except ParseError as exc:
        return Request(line.split(" ", 1)[0], "invalid:", headers), exc
    scheme = uri_text.partition(":")[0].lower()
    if ":" in uri_text and is_token(scheme) and scheme not in schemes:
        return Request(method, "invalid:", headers), ParseError(416, "Unsupported URI Scheme")
    try:
        uri = parse_uri(uri_text)
    except ParseError:
        return Request(method, "invalid:", headers), ParseError(400, "Bad Request-URI")
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 §19.1.5: headers are not allowed in a Request-URI.
        return Request(method, uri, headers), ParseError(400, "Headers in Request-URI")
    return Request(method, uri, headers), None


class StreamFramer:
    """Cuts a byte stream (TCP/TLS) into messages using Content-Length.

    Keep-alive CRLFs between messages (RFC 5626 §3.5.1) are skipped; each
    double-CRLF "ping" among them is counted in ``pings`` (the connection
    answers each with a CRLF "pong"). After a ParseError the stream cannot be
    resynchronised and should be closed.

    Only ``max_header_size`` bytes of a header block are ever kept: a peer
    that never ends its headers would otherwise make the connection hold up
    to ``max_size`` bytes for as long as it stays open. Past the cap the
    buffer is cut to the header lines that fit, so the error can still be
    answered from them (513) and nothing more is held.
    """

    def __init__(self, max_size: int = 65536, max_header_size: int | None = None) -> None:
        self.max_size = max_size
        self.max_header_size = min(max_header_size or max_size, max_size)
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for the end of the headers
        self._crlfs = 0  # CRLF bytes seen in a row between messages
        self.pings = 0

    def take_pings(self) -> int:
        """Pings seen since the last call."""
        pings, self.pings = self.pings, 0
        return pings

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def pending(self) -> bytes:
        """The unframed bytes; after a ParseError they start with the bad message."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while True:
            skip = 0
            while skip < len(buf) and buf[skip] in b"\r\n":
                skip += 1
            if skip:
                self._crlfs += skip
                self.pings += self._crlfs // 4
                self._crlfs %= 4
                del buf[:skip]
                self._scanned = 0
            if not buf:
                break
            self._crlfs = 0
            # Resume the search where the last one stopped: a peer sending a
            # byte at a time must not cost a scan of the whole buffer each.
            end = buf.find(b"\r\n\r\n", max(self._scanned - 3, 0))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self.max_header_size:
                    self._keep_answerable_head()
                    raise ParseError(513, "Headers Too Large")
                break
            if end + 4 > self.max_header_size:
                self._keep_answerable_head()
                raise ParseError(513, "Headers Too Large")
            length = _stream_content_length(bytes(buf[:end]))
            total = end + 4 + length
            if total > self.max_size:
                raise ParseError(513, "Message Too Large")
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
            self._scanned = 0
        return out

    def _keep_answerable_head(self) -> None:
        """Cut the buffer to the whole header lines within the cap, plus the blank line."""
        cut = self._buf.rfind(b"\r\n", 0, self.max_header_size - 2)
        if cut < 0:
            self._buf = bytearray()
        else:
            del self._buf[cut + 2:]
            self._buf += b"\r\n"
        self._scanned = 0


def _stream_content_length(head: bytes) -> int:
    value: bytes | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, rest = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            v = rest.strip()
            if value is not None and v != value:
                raise ParseError(400, "Multiple Content-Length headers")
            value = v
    # The header block is complete, so a request can still be answered (the
    # connection is closed after: the stream cannot be resynchronised).
    if value is None:
        raise ParseError(400, "Missing Content-Length header")
    if not value.isdigit() or len(value.lstrip(b"0")) > _MAX_CONTENT_LENGTH_DIGITS:
        raise ParseError(400, "Bad Content-Length header")
    return int(value)
