"""The msilo seed's configuration, `route{}` and `failure_route[1]`, statement
by statement in sipsilo's Python routing API.

Run it with `[server] route = "seed_route:route"` and this directory on
PYTHONPATH. Each block keeps the seed's comment and order; where the seed
calls something sipsilo does not need, a comment says why:

* `t_newtran()`: every request already has its server transaction;
* `sl_reply_error()`: t_reply() only fails when the transaction was already
  answered (e.g. m_store refused the MESSAGE with a 4xx), so there is no
  internal error left to report;
* `drop()` / `break`: `return`.

Unlike sipsilo's default route, this is the seed as written: it relays
anything not for us (an open relay), so use it on loopback only.
"""

from __future__ import annotations

from sipsilo.routing.context import RouteContext


async def route(ctx: RouteContext) -> None:
    if not ctx.mf_process_maxfwd_header(10):
        ctx.sl_send_reply(483, "To Many Hops")
        return  # drop()

    if ctx.uri_is_myself():
        # for testing purposes, simply okay all REGISTERs
        if ctx.method == "REGISTER":
            await ctx.save("location")
            ctx.log("REGISTER received -> dumping messages with MSILO")

            # MSILO - dumping user's offline messages
            if await ctx.m_dump():
                ctx.log("MSILO: offline messages dumped - if they were")
            else:
                ctx.log("MSILO: no offline messages dumped")
            return  # break

        # domestic SIP destinations are handled using our USRLOC DB

        if not await ctx.lookup("location"):
            # t_newtran(): the transaction exists already
            # we do not care about anything else but MESSAGEs
            if ctx.method != "MESSAGE":
                if not ctx.t_reply(404, "Not found"):
                    pass  # sl_reply_error(): already answered
                return  # break
            ctx.log("MESSAGE received -> storing using MSILO")
            # MSILO - storing as offline message
            if await ctx.m_store("0"):
                ctx.log("MSILO: offline message stored")
                if not ctx.t_reply(202, "Accepted"):
                    pass  # sl_reply_error(): already answered
            else:
                ctx.log("MSILO: offline message NOT stored")
                if not ctx.t_reply(503, "Service Unavailable"):
                    pass  # sl_reply_error(): m_store already answered with its 4xx
            return  # break
        # if the downstream UA does not support MESSAGE requests
        # go to failure_route[1]
        ctx.t_on_failure(failure_route_1)
        await ctx.t_relay()
        return  # break

    # forward anything else
    await ctx.t_relay()


async def failure_route_1(ctx: RouteContext) -> None:
    # forwarding failed -- check if the request was a MESSAGE
    if ctx.method != "MESSAGE":
        return  # break

    ctx.log("MSILO:the downstream UA doesn't support MESSAGEs")
    # we have changed the R-URI with the contact address, ignore it now
    if await ctx.m_store("1"):
        ctx.log("MSILO: offline message stored")
        ctx.t_reply(202, "Accepted")
    else:
        ctx.log("MSILO: offline message NOT stored")
        ctx.t_reply(503, "Service Unavailable")
