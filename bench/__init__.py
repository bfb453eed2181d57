"""``make bench``: tasklab against baselines measured in the same run.

``python -m bench`` starts a private RabbitMQ node, measures the baselines (a bare
FastAPI endpoint, the same endpoint publishing confirmed messages, a naive endpoint
with a new connection per request, raw Celery), then the real local stack, and
writes ``bench/results.json`` and ``bench/results.md``. See ``bench/README.md``.
"""
