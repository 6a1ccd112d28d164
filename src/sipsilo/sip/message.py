"""SIP requests and responses.

A message holds its headers as raw text (see Headers); structured views such
as ``vias`` or ``from_`` are parsed on first access and cached against the
headers' version, so a MESSAGE that is only relayed never pays for parsing
headers nobody reads.  The parsed objects are snapshots: after changing one,
assign it back (``msg.to = to``) or edit ``msg.headers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from sipsilo.sip.address import NameAddr, parse_contacts
from sipsilo.sip.errors import ParseError
from sipsilo.sip.grammar import is_token
from sipsilo.sip.headers import Headers
from sipsilo.sip.status import reason_phrase
from sipsilo.sip.uri import SipUri, parse_uri
from sipsilo.sip.via import Via

__all__ = ["Message", "Request", "Response", "reason_phrase"]

SIP_VERSION = "SIP/2.0"
_HAS_SPACE = re.compile(r"\s").search
# Cache key of a parsed view -> lower-case canonical name of its header.
_HEADER_OF = {
    "call_id": "call-id", "cseq": "cseq", "from": "from", "to": "to", "vias": "via",
    "max_forwards": "max-forwards", "contacts": "contact", "routes": "route",
    "record_routes": "record-route",
}
_MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: the sequence number is < 2**31

T = TypeVar("T")


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
        raise ParseError(400, "Bad CSeq header")
    if len(parts[0]) > 10 or int(parts[0]) > _MAX_CSEQ:
        raise ParseError(400, "Bad CSeq header")
    if not is_token(parts[1]):
        raise ParseError(400, "Bad CSeq header")
    return int(parts[0]), parts[1]


def _has_tag(msg: Message, raw_to: str) -> bool:
    try:
        return msg.to.tag is not None
    except ParseError:
        # An unparseable To (we are answering 400) gets no tag added: a
        # textual guess is safer than failing to answer at all.
        return ";tag=" in raw_to.replace(" ", "").lower()


class Message:
    """What requests and responses share: headers, body, parsed views."""

    headers: Headers
    body: bytes

    def __init__(self, headers: Headers | Iterable[tuple[str, str]] | None, body: bytes) -> None:
        if headers is None:
            headers = Headers()
        elif not isinstance(headers, Headers):
            headers = Headers(headers)
        self.headers = headers
        self.body = body
        self._cache: dict[str, tuple[Headers, int, Any]] = {}

    def _cached(self, key: str, build: Callable[[], T]) -> T:
        # An entry is (headers object, headers.version when checked, value).
        # It is stale only when *this* header changed since (or the Headers
        # object was replaced): relaying rewrites Via and Route, not From or
        # CSeq. The first test is the common case: nothing changed at all.
        headers = self.headers
        hit = self._cache.get(key)
        if hit is not None and hit[0] is headers:
            seen = hit[1]
            if seen == headers.version:
                return hit[2]  # type: ignore[no-any-return]
            if headers._changed.get(_HEADER_OF.get(key, key), 0) <= seen:
                self._cache[key] = (headers, headers.version, hit[2])
                return hit[2]  # type: ignore[no-any-return]
        value = build()
        self._cache[key] = (headers, headers.version, value)
        return value

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise ParseError(400, f"Missing {name} header", answerable=False)
        return value

    # -- parsed views ---------------------------------------------------
    @property
    def call_id(self) -> str:
        def build() -> str:
            lines = self.headers.get_lines("Call-ID")
            if not lines:
                raise ParseError(400, "Missing Call-ID header", answerable=False)
            value = lines[0].strip()
            if not value or _HAS_SPACE(value):
                raise ParseError(400, "Bad Call-ID header", answerable=False)
            return value

        return self._cached("call_id", build)

    @call_id.setter
    def call_id(self, value: str) -> None:
        self.headers.set("Call-ID", value)

    @property
    def cseq(self) -> tuple[int, str]:
        return self._cached("cseq", lambda: parse_cseq(self._required("CSeq")))

    @cseq.setter
    def cseq(self, value: tuple[int, str]) -> None:
        self.headers.set("CSeq", f"{value[0]} {value[1]}")

    @property
    def from_(self) -> NameAddr:
        return self._cached("from", lambda: NameAddr.parse(self._required("From"), "From"))

    @from_.setter
    def from_(self, value: NameAddr) -> None:
        self.headers.set("From", str(value))

    @property
    def to(self) -> NameAddr:
        return self._cached("to", lambda: NameAddr.parse(self._required("To"), "To"))

    @to.setter
    def to(self, value: NameAddr) -> None:
        self.headers.set("To", str(value))

    @property
    def vias(self) -> list[Via]:
        """Every Via, top first (comma-joined lines are split)."""
        return self._cached("vias", lambda: [Via.parse(v) for v in self.headers.get_all("Via")])

    @vias.setter
    def vias(self, value: Iterable[Via]) -> None:
        self.headers.set_all("Via", [str(v) for v in value])

    def replace_top_via(self, via: Via) -> None:
        """Put ``via`` in place of the top Via, leaving the others byte for byte.

        The cached parse of the Via list is updated rather than dropped: the
        stack stamps received/rport on every request and then reads the Vias
        again to match the transaction.
        """
        vias = list(self.vias)
        self.headers.pop_first_value("Via")
        self.headers.prepend("Via", str(via))
        if vias:
            vias[0] = via
        else:
            vias = [via]
        self._cache["vias"] = (self.headers, self.headers.version, vias)

    @property
    def top_via(self) -> Via | None:
        vias = self.vias
        return vias[0] if vias else None

    @property
    def max_forwards(self) -> int | None:
        def build() -> int | None:
            value = self.headers.get("Max-Forwards")
            if value is None:
                return None
            value = value.strip()
            if not value.isdigit() or not value.isascii() or int(value) > 255:
                raise ParseError(400, "Bad Max-Forwards header")
            return int(value)

        return self._cached("max_forwards", build)

    @max_forwards.setter
    def max_forwards(self, value: int | None) -> None:
        if value is None:
            self.headers.remove("Max-Forwards")
        else:
            self.headers.set("Max-Forwards", str(value))

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return None if value is None else value.strip()

    @property
    def contacts(self) -> list[NameAddr] | Literal["*"]:
        """All Contact values; ``"*"`` for the REGISTER wildcard."""

        def build() -> list[NameAddr] | Literal["*"]:
            out: list[NameAddr] = []
            lines = self.headers.get_lines("Contact")
            for line in lines:
                parsed = parse_contacts(line)
                if parsed == "*":
                    if len(lines) != 1:
                        raise ParseError(400, "Invalid wildcard Contact")
                    return "*"
                out.extend(parsed)
            return out

        return self._cached("contacts", build)

    @property
    def routes(self) -> list[NameAddr]:
        return self._cached(
            "routes", lambda: [NameAddr.parse(v, "Route") for v in self.headers.get_all("Route")]
        )

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._cached(
            "record_routes",
            lambda: [NameAddr.parse(v, "Record-Route")
                     for v in self.headers.get_all("Record-Route")],
        )

    @property
    def expires(self) -> int | None:
        """The Expires header as seconds, None when absent or not a number."""
        value = self.headers.get("Expires")
        if value is None or not value.strip().isdigit():
            return None
        return int(value.strip())

    # -- serialisation --------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def serialise(self) -> bytes:
        """Wire form; Content-Length always reflects ``body``."""
        lines = [self.start_line()]
        for name, value in self.headers.items():
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.serialise()


class Request(Message):
    method: str
    uri: SipUri | str

    def __init__(
        self,
        method: str,
        uri: SipUri | str,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        # Accept "sip:..." text for convenience; keep other schemes as text.
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def make_response(
        self, status: int, reason: str | None = None, to_tag: str | None = None
    ) -> Response:
        """Build a response per RFC 3261 §8.2.6.

        Via, From, Call-ID and CSeq are copied as received (not re-serialised)
        so the client's transaction matching sees exactly its own values.
        """
        headers = Headers()
        for value in self.headers.get_lines("Via"):
            headers.add("Via", value)
        headers.add("From", self._required("From"))
        to = self._required("To")
        if to_tag and status != 100 and not _has_tag(self, to):
            to = f"{to.rstrip()};tag={to_tag}"
        headers.add("To", to)
        headers.add("Call-ID", self._required("Call-ID"))
        headers.add("CSeq", self._required("CSeq"))
        return Response(status, reason, headers)

    def copy(self) -> Request:
        return Request(self.method, self.uri, self.headers.copy(), self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    status: int
    reason: str

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason_phrase(status) if reason is None else reason

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(), self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def failure_words(response: Response) -> str:
    """A failed final answer in a log's words, telling apart what the far end said
    from what the local transaction concluded for lack of an answer.

    Every answer a UAS sends for a non-100 status carries a To tag (RFC 3261
    §8.2.6.2); the answers a client transaction makes up itself (timer F's 408,
    a transport failure's 503, an unsendable message's 513) are built from the
    request, which had none.
    """
    status, reason = response.status, response.reason
    if "To" in response.headers and not _has_tag(response, response._required("To")):
        if status == 408:
            return "did not answer in time (timeout)"
        return f"could not be reached ({status} {reason})"
    return f"refused it with {status} {reason}"
