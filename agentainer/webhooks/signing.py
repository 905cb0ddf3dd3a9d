"""Standard Webhooks signatures: the headers that let a receiver trust an event.

A delivery carries ``webhook-id`` (the event's ID, the same on every retry, so a receiver
drops what it already has), ``webhook-timestamp`` (Unix seconds, this attempt's: a receiver
refuses old ones, so a captured request cannot be replayed later) and ``webhook-signature``:
``v1,`` and base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}``, keyed with the bytes
the secret's base64 (after ``whsec_``) encodes.

NOTE: a few lines of the standard library rather than the ``standardwebhooks`` package:
it would add a runtime dependency for one HMAC, and its ``Webhook`` takes any secret it can
decode while the deploy spec already validates ours (agents/spec.py). The tests check these
signatures with that package, the reference implementation, on a real receiver.
"""

import base64
import hashlib
import hmac

from agentainer.agents.spec import WEBHOOK_SECRET_PREFIX

ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = (
    "webhook-id", "webhook-timestamp", "webhook-signature")


def key(secret: str) -> bytes:
    """Return the HMAC key a ``whsec_`` secret encodes.

    Raises:
        ValueError: not a ``whsec_`` secret, or not base64.
    """
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)


def signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value of one delivery (``v1,<base64>``)."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Return the three Standard Webhooks headers of one delivery."""
    return {ID_HEADER: event_id, TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(secret, event_id, timestamp, body)}
