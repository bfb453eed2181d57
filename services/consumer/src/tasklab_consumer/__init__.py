"""tasklab's legacy consumer: runs the tasks of method ``rabbitmq`` from the direct queue.

- :mod:`tasklab_consumer.settings`: its configuration (environment variables);
- :mod:`tasklab_consumer.shutdown`: signal-driven graceful shutdown;
- :mod:`tasklab_consumer.processing`: one message's life (reports, work, retries);
- :mod:`tasklab_consumer.consumer`: the pika connection, worker threads and acks;
- :mod:`tasklab_consumer.__main__`: the ``tasklab-consumer`` command.
"""
