"""``tasklab-consumer``: run the legacy consumer until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import sys

from tasklab_common.callback import CallbackClient
from tasklab_common.settings import setup_logging
from tasklab_consumer.cancels import CancelBoard
from tasklab_consumer.consumer import Consumer
from tasklab_consumer.processing import TaskRunner
from tasklab_consumer.settings import ConfigurationError, load_settings
from tasklab_consumer.shutdown import Shutdown


def quiet_libraries() -> None:
    """Keep library chatter out of the task log unless ``LOG_LEVEL=DEBUG``.

    httpx logs every callback at INFO; pika logs each connection failure at ERROR,
    with tracebacks, although the consumer reports every one on a line of its own.
    """
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("pika").setLevel(logging.CRITICAL)


def main() -> None:
    """Entry point: configure, consume until a shutdown, exit 0 once tasks are settled."""
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"tasklab-consumer: invalid configuration: {exc}")
    setup_logging(settings)
    quiet_libraries()
    shutdown = Shutdown(hand_back_after=settings.hand_back_after)
    shutdown.install()
    cancels = CancelBoard()
    # One callback client, shared by all worker threads, which combines their reports
    # into batches when they report at once; once stopping, it gives up on an
    # unreachable api after CALLBACK_STOPPING_WAIT (the message is then requeued).
    callbacks = CallbackClient.from_settings(
        settings, stopping=lambda: shutdown.requested, batching=True
    )
    runner = TaskRunner(settings, callbacks, shutdown, cancels)
    Consumer(settings, runner, shutdown, cancels).run()


if __name__ == "__main__":
    main()
