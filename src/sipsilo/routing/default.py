"""The default route: the seed's msilo configuration, made safe by default.

It is the seed's `route{}` and `failure_route[1]` statement by statement, with
three differences a production server needs:

* OPTIONS to the server itself (no user part) is answered 200, so that
  keep-alive pings and monitoring work;
* requests for foreign domains are relayed only when `[proxy] relay_foreign`
  is on (the seed's "forward anything else" made this an open relay);
* in-dialog requests (To-tag) are relayed along their Route set only when
  our Route entry carries a token issued for that very dialog, direction and
  Request-URI; an initial request's preloaded Route naming us is consumed and
  the request routed as if it had none, and one whose Route leads elsewhere
  is treated as foreign;
* with [auth] on, a REGISTER and any request From a local user (in-dialog
  ones too, but for ACK and CANCEL) is digest-authenticated
  (`ctx.auth_check()`) before it is saved, stored or relayed.
"""

from __future__ import annotations

from sipsilo.routing.context import RouteContext
from sipsilo.sip.message import failure_words

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER"


async def route(ctx: RouteContext) -> None:
    if not ctx.mf_process_maxfwd_header(10):
        ctx.sl_send_reply(483, "Too Many Hops")
        return

    # in-dialog requests that we record-routed go on along their Route set --
    # only with a token of ours issued for this dialog, direction and
    # Request-URI (see proxy.route_token); anything else is treated like any
    # request for elsewhere (no open relay by a lifted token or a made-up To
    # tag). One From a local user must still come from that user.
    if ctx.has_totag() and ctx.loose_route() and ctx.routed_by_us:
        if ctx.from_is_myself() and not await ctx.auth_check():
            return
        await ctx.t_relay()
        return
    # an initial request: our own (preloaded) Route entries are consumed; one
    # still routed elsewhere is a request for a foreign destination
    ctx.loose_route()

    if ctx.uri_is_myself() and not ctx.request.routes:
        if ctx.method == "REGISTER":
            # only the owner of the AoR may bind contacts to it (and get its messages)
            if not await ctx.auth_check():
                return
            await ctx.save("location")
            # m_dump starts the delivery; it logs each message it delivers
            if await ctx.m_dump():
                ctx.log("registered: stored messages for this user are delivered now")
            return

        if ctx.method == "OPTIONS" and ctx.request_uri_has_no_user():
            ctx.t_reply(200, "OK", headers=[("Allow", ALLOW), ("Accept", "*/*")])
            return

        # a request claiming to be from one of our users must prove it
        if ctx.from_is_myself() and not await ctx.auth_check():
            return

        # domestic SIP destinations are handled using our location service
        if not await ctx.lookup("location"):
            # we do not care about anything else but MESSAGEs
            if ctx.method != "MESSAGE":
                ctx.t_reply(404, "Not Found")
                return
            if await ctx.m_store("0"):
                # (m_store logs the one line per stored message operators read)
                ctx.t_reply(202, "Accepted")
            elif ctx.t_reply(503, "Service Unavailable"):
                ctx.log("recipient not registered and the message could not be stored (503)")
            return

        # online, but messages stored earlier are not delivered yet: a relayed
        # MESSAGE would overtake them, so it is stored behind them (and the
        # delivery to the contact is started or extended)
        if ctx.method == "MESSAGE" and await ctx.m_pending():
            if await ctx.m_store("1"):
                ctx.log("stored messages are still being delivered: message stored behind"
                        " them (202)")
                ctx.t_reply(202, "Accepted")
            elif ctx.t_reply(503, "Service Unavailable"):
                ctx.log("message could not be stored behind the pending ones (503)")
            return

        # if the downstream UA does not support MESSAGE requests
        # go to failure_route[1]
        ctx.t_on_failure(failure_route_1)
        await ctx.t_relay()
        return

    relay_foreign = ctx.services.config.proxy.relay_foreign
    if ctx.method == "REGISTER" and not relay_foreign:
        ctx.t_reply(403, "Forbidden - domain not served")
        return
    if not relay_foreign:
        ctx.t_reply(403, "Relaying denied")
        return
    if ctx.from_is_myself() and not await ctx.auth_check():
        return
    # forward anything else
    await ctx.t_relay()


async def failure_route_1(ctx: RouteContext) -> None:
    # forwarding failed -- check if the request was a MESSAGE
    if ctx.method != "MESSAGE":
        return
    reply = ctx.failed_reply
    what = failure_words(reply) if reply is not None else "failed"
    # we have changed the R-URI with the contact address, ignore it now
    if await ctx.m_store("1"):
        ctx.log(f"recipient's phone {what}: message stored for the next REGISTER (202)")
        ctx.t_reply(202, "Accepted")
    elif ctx.t_reply(503, "Service Unavailable"):
        ctx.log(f"recipient's phone {what}, and the message could not be stored (503)")
