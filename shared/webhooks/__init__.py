"""Signed, durable webhooks.

* ``events``: the deliveries an event makes, written with the change that causes it;
* ``delivery``: signing, sending, backoff (the headers a receiver gets are described there);
* ``admission``: per-endpoint circuit breakers and in-flight limits, in Redis;
* ``destinations``: which addresses may be sent to, names resolved with a bounded wait;
* ``endpoints``: registering, listing and deleting endpoints, and listing deliveries;
* ``repository``: every query on ``webhook_endpoints`` and ``webhook_deliveries``.
"""
