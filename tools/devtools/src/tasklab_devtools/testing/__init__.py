"""Test helpers shared by every suite (written once, imported by each).

- :mod:`.fakeapi`: the api's side of the status callback, for worker tests;
- :mod:`.amqp`: publishing to and reading the work queues of a real broker;
- :mod:`.apisettings`: the api's settings for in-process tests, no broker needed;
- :mod:`.stacks`: the local stack a suite runs against, on a private broker node.

They import the services' packages: they run in the workspace's environment, where
every service is installed (the tests' own), never in a service image.
"""
