"""tasklab's shared library.

Everything the api, the Celery worker and the legacy consumer must agree on lives
here, so that the three task paths cannot drift apart:

- :mod:`tasklab_common.models`: statuses, methods, kinds and the status order;
- :mod:`tasklab_common.messages`: what goes over the broker and over the callback;
- :mod:`tasklab_common.queues`: queue names and declaration arguments;
- :mod:`tasklab_common.signing`: signing and verifying callbacks;
- :mod:`tasklab_common.callback`: the workers' authenticated, retrying callback client;
- :mod:`tasklab_common.work`: the simulated work itself, as plain functions;
- :mod:`tasklab_common.settings`: the settings base every service extends.
"""

__version__ = "0.1.0"
