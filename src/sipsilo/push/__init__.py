"""Push notifications that wake sleeping phones (RFC 8599).

``targets``: where an AoR can be woken (its last push target, kept in SQL).
``pushers``: the providers (webhook, Web Push, FCM HTTP v1, APNs).
``service``: when to push (one per user per interval, in background tasks).
"""
