"""sipsilo: a SIP registrar and stateful proxy that keeps MESSAGEs for offline users.

It re-creates the msilo module of SER/Kamailio as a standalone server: a MESSAGE
for a user who is not registered is stored and answered 202 Accepted, and every
stored message is delivered, in order and exactly once, when the user registers.
"""

__version__ = "0.1.0"
