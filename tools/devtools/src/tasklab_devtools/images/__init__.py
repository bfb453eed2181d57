"""Build the service images and check that they really run (make images, verify-images).

``python -m tasklab_devtools.images build --tag TAG`` builds the three service stages of
``services/Dockerfile`` (from the repository root) as ``tasklab/<service>:TAG`` and
``:dev`` with the Docker engine that answers.

``python -m tasklab_devtools.images verify --tag TAG`` does everything itself:

1. uses the Docker engine that answers, or starts one that leaves the host's network
   alone (``dockerd --bridge=none --iptables=false --ip-forward=false
   --ip-masq=false``; Debian's ``docker.io`` is installed first when root and
   missing) and stops it at the end; the host's addresses, routes, iptables rules and
   ``ip_forward`` are compared before and after;
2. when the pinned base image (``ARG PYTHON_IMAGE`` of the Dockerfile) is neither
   present nor pullable, makes a stand-in with ``debootstrap`` (Debian bookworm with
   its Python 3.11, and the host's CA bundle, which pip and uv in a build need where
   TLS is intercepted) and builds on it through that build argument; the stand-in is
   tagged :data:`STANDIN_IMAGE`, never with the official image's name;
3. builds the three images (``--network host``);
4. runs them as Kubernetes would, each with a read-only root filesystem, a tmpfs on
   ``/tmp``, every capability dropped, ``no-new-privileges`` and the image's own
   non-root user, on the host network against a private RabbitMQ node on 127.0.0.1:
   the api's ``migrate`` command alone, then the api (SQLite on a volume at ``/data``),
   the Celery worker and the consumer; checks ``/readyz``, that the api serves every
   asset of its page (the chart library of the api's UI stage among them), a task of
   each method (celery, rabbitmq, sync) finished ``DONE`` by the right worker,
   ``celery -A celery_app inspect registered`` inside the worker container, the
   processes' UID, and a clean exit of every container on ``docker stop``;
5. removes its containers, volume, broker node and temporary files.

Logs (builds, containers, dockerd) go to ``artifacts/logs/images/``. Two runs at once
share one engine: the one that started it stops it when it ends, under the other.

Split by concern: :mod:`.engine` (the Docker CLI, and an engine of its own where none
answers), :mod:`.base` (the pinned base image or its stand-in), :mod:`.build` (the
builds), :mod:`.checks` (running the images as Kubernetes would and checking them),
and ``__main__`` (the two commands).
"""

from tasklab_devtools.images.base import STANDIN_IMAGE, ensure_base_image, make_standin_base
from tasklab_devtools.images.build import (
    DOCKERFILE,
    SERVICES,
    Built,
    build_images,
    pinned_base_image,
    repo_root,
)
from tasklab_devtools.images.checks import IMAGE_UID
from tasklab_devtools.images.engine import (
    SAFE_DOCKERD_FLAGS,
    DockerEngine,
    build_env,
    docker,
    docker_answers,
    ensure_debian_packages,
    image_exists,
    network_snapshot,
)

__all__ = [
    "DOCKERFILE",
    "IMAGE_UID",
    "SAFE_DOCKERD_FLAGS",
    "SERVICES",
    "STANDIN_IMAGE",
    "Built",
    "DockerEngine",
    "build_env",
    "build_images",
    "docker",
    "docker_answers",
    "ensure_base_image",
    "ensure_debian_packages",
    "image_exists",
    "make_standin_base",
    "network_snapshot",
    "pinned_base_image",
    "repo_root",
]
