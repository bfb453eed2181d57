"""tasklab developer tools.

- :mod:`tasklab_devtools.rabbitmq`: a private RabbitMQ node (tests, ``make dev``);
- :mod:`tasklab_devtools.procs`: a small process supervisor;
- :mod:`tasklab_devtools.stack`: the local stack (api, Celery worker, consumer);
- :mod:`tasklab_devtools.dev`: ``tasklab-dev``, what ``make dev`` runs.
"""
