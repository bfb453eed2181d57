"""Broker names shared by the api (publisher) and the workers (consumers).

Queues are durable classic queues declared with no arguments by whichever side
connects first; limits (max length, dead-lettering) are applied by broker policies,
so they can change without redeclaring a queue.
"""

from typing import Final

from tasklab_common.models import Method

#: The Celery queue, as in the original guide (routing key ``celery``).
CELERY_QUEUE: Final = "celery"
#: The queue the legacy pika consumer reads (method ``rabbitmq``).
DIRECT_QUEUE: Final = "direct_tasks"
#: Dead-letter exchange and queue for messages that were rejected for good.
DEAD_LETTER_EXCHANGE: Final = "tasklab.dlx"
DEAD_LETTER_QUEUE: Final = "dead_letters"

#: Fanout exchange of the api's cancel notices (:class:`~tasklab_common.messages.CancelNotice`):
#: each consumer binds a queue of its own (exclusive, auto-delete, named by the broker)
#: and stops the cancelled task if it runs it. (Celery tasks are revoked instead.)
CANCEL_EXCHANGE: Final = "tasklab.cancel"

ALL_QUEUES: Final = (CELERY_QUEUE, DIRECT_QUEUE, DEAD_LETTER_QUEUE)

#: The queue each method's tasks are published to (``sync`` runs on the Celery workers).
QUEUE_OF_METHOD: Final = {
    method: CELERY_QUEUE if method.runs_on_celery else DIRECT_QUEUE for method in Method
}
