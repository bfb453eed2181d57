"""tasklab's shared library.

Everything the api, the Celery worker and the legacy consumer must agree on lives
here, so that the three task paths cannot drift apart:

- :mod:`tasklab_common.models`: statuses, methods, kinds, the status order, verdicts;
- :mod:`tasklab_common.messages`: what goes over the broker and over the callback;
- :mod:`tasklab_common.queues`: queue and exchange names;
- :mod:`tasklab_common.protocol`: the worker protocol both workers run per delivery;
- :mod:`tasklab_common.work`: the simulated work itself, as interruptible functions;
- :mod:`tasklab_common.handback`: handing a running task back when its worker stops;
- :mod:`tasklab_common.signing`: signing and verifying callbacks;
- :mod:`tasklab_common.callback`: the workers' authenticated, retrying callback client;
- :mod:`tasklab_common.settings`: the settings base every service extends;
- :mod:`tasklab_common.errors`: how errors read in one line;
- :mod:`tasklab_common.heartbeat`, :mod:`tasklab_common.logfmt`: liveness file, log formats.
"""

__version__ = "0.1.0"
