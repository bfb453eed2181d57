"""``make bench``: tasklab against baselines measured in the same run.

``python -m bench`` starts a private RabbitMQ node (and, for the peers, a private
PostgreSQL server and redis-server), the real local stack, the baselines (a bare FastAPI
endpoint, the same endpoint publishing confirmed messages, a naive endpoint with a new
connection per request, raw Celery) and the peers (Celery tracking its own statuses
with a PostgreSQL or a Redis result backend, or followed by Flower), measures them in
interleaved rounds and writes ``bench/results.json`` and ``bench/results.md``. See
``bench/README.md``.
"""
