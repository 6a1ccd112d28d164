"""Reminders (Kamailio msilo's ``reminder`` and ``snd_time``): a stored message sent at
its time.

A route stores one with ``ctx.m_store(mode, send_at=...)`` while ``[msilo] reminder``
is set. Every ``check_time`` the due ones are claimed (so one instance sends each) and
sent to the user's current contact, From the ``reminder`` address as in Kamailio. A 2xx
deletes the row; anything else, or no contact, turns it into an ordinary stored
message that the next REGISTER delivers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from sipsilo.push.store import PushStore
from sipsilo.silo.compose import delivery_request
from sipsilo.silo.store import StoredMessage
from sipsilo.sip.uri import SipUri

if TYPE_CHECKING:
    from sipsilo.routing.services import Services

log = logging.getLogger(__name__)


async def send_due(services: Services, store: PushStore, owner: str) -> int:
    """Send the reminders due now; how many were delivered."""
    reminder = services.config.msilo.reminder
    if reminder is None:
        return 0
    now = int(time.time())
    lease = now + 2 * int(services.config.tm.fr_timer) + 10
    delivered = 0
    for due in await store.claim_due(now, owner, lease):
        if await _send_one(services, due, reminder):
            await store.reminder_sent(due.id, owner)
            services.counters.inc("dumped_reminders")
            delivered += 1
        else:
            await store.reminder_failed(due.id, owner)
            services.counters.inc("failed_reminders")
    return delivered


async def _send_one(services: Services, due: StoredMessage, reminder: str) -> bool:
    aor = f"sip:{due.username}@{due.domain}"
    binding = await services.message_binding(aor)
    target = None if binding is None else await services.target_for_binding(binding)
    if binding is None or target is None:
        log.info("reminder %s for %s not sent: not registered; kept for the next REGISTER",
                 due.id, aor)
        return False
    msg = dataclasses.replace(due, src_addr=reminder)  # From: the reminder address
    request = delivery_request(msg, SipUri.parse(binding.contact), add_date=False,
                               user_agent=services.server_header)
    response = await services.stack.send_request(request, target)
    if 200 <= response.status < 300:
        log.info("reminder %s for %s delivered to %s", due.id, aor, binding.contact)
        return True
    log.info("reminder %s for %s failed: %s %s; kept for the next REGISTER", due.id, aor,
             response.status, response.reason)
    return False
