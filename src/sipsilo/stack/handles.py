"""What the routing layer holds for each new request: a server transaction handle."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sipsilo.flow import Flow
from sipsilo.sip.ids import new_tag
from sipsilo.sip.message import Request, Response

if TYPE_CHECKING:
    from sipsilo.stack.core import SipStack


class ServerTransaction:
    """One incoming request and the means to answer it, exactly once finally."""

    __slots__ = ("_to_tag", "final", "flow", "key", "request", "stack")

    def __init__(
        self,
        stack: SipStack,
        request: Request,
        flow: Flow,
        key: tuple[str, ...],
    ) -> None:
        self.stack = stack
        self.request = request
        self.flow = flow
        self.key = key
        self._to_tag: str | None = None
        self.final: Response | None = None

    @property
    def to_tag(self) -> str:
        # One tag for every response of this transaction (§8.2.6.2): provisional
        # and final answers must agree or the client sees two dialogs.
        if self._to_tag is None:
            self._to_tag = self.request.to.tag or new_tag()
        return self._to_tag

    def respond(self, response: Response) -> None:
        if self.final is not None:
            return  # a transaction has one final answer; later ones are dropped
        if response.status >= 200:
            self.final = response
        # Through the stack by key, not a callback holding the transaction:
        # a handle <-> transaction cycle would leave every finished request
        # to the cyclic garbage collector instead of reference counting.
        self.stack.tu_response(self, response)

    def make_response(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        response = self.request.make_response(
            status, reason, to_tag=None if status == 100 else self.to_tag
        )
        for name, value in headers:
            response.headers.add(name, value)
        if body or content_type:
            if content_type:
                response.headers.set("Content-Type", content_type)
            response.body = body
        if self.stack.server_header and "Server" not in response.headers:
            response.headers.add("Server", self.stack.server_header)
        return response

    def reply(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        response = self.make_response(status, reason, headers, body, content_type)
        self.respond(response)
        return response
