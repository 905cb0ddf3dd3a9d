"""Signed webhooks: an agent's events, delivered to its ``webhook`` URL by the workers.

:mod:`~agentainer.webhooks.outbox` holds the events and their deliveries in Redis,
:mod:`~agentainer.webhooks.delivery` makes one attempt per RQ job, and
:mod:`~agentainer.webhooks.signing` signs each as Standard Webhooks says.
"""
