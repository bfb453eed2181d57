"""``/api/cluster``: the worker Deployments on Kubernetes (see :mod:`tasklab_api.workloads`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from tasklab_api.deps import State
from tasklab_api.schemas import ClusterOut, ErrorOut, ScaleIn
from tasklab_api.workloads import ScaleRefused

router = APIRouter(prefix="/api/cluster", tags=["cluster"])


@router.get("", response_model=ClusterOut)
async def cluster(state: State) -> ClusterOut:
    """The worker Deployments' desired and ready replicas, their pods and autoscalers;
    ``available: false`` with the reason outside a cluster."""
    return await state.cluster.snapshot()


@router.post(
    "/workloads/{name}/scale",
    response_model=ClusterOut,
    responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
async def scale(
    state: State, name: Annotated[str, Path(max_length=63)], body: ScaleIn
) -> ClusterOut:
    """Set the replicas of celery-worker or consumer (``kubectl scale``): refused unless
    the chart allows it (``api.kubernetes.scaleFromUi``) and while an autoscaler owns
    the count."""
    try:
        return await state.cluster.scale(name, body.replicas)
    except ScaleRefused as refused:
        raise HTTPException(refused.status, refused.reason) from None
