"""``POST /v1/typescript-errors/{id}/accept|reject``: a project reviews a suggested fix."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path

from pipeline.api.deps import DB, Caller, call
from pipeline.api.schemas import ReviewOut
from pipeline.errorfix.store import review
from pipeline.intake.jsonsafe import INT64_MAX

router = APIRouter(tags=["errorfix"])


@router.post(
    "/v1/typescript-errors/{error_id}/{verdict}",
    response_model=ReviewOut,
    responses={
        401: {"description": "missing or unknown API key"},
        403: {"description": "the error belongs to another project"},
        404: {"description": "no such error"},
        409: {"description": "the error has no suggested fix to review yet"},
        422: {"description": "error_id is not a positive 64-bit integer, or verdict unknown"},
    },
)
async def review_fix(
    error_id: Annotated[int, Path(ge=1, le=INT64_MAX, description="typescript_errors.id")],
    verdict: Literal["accept", "reject"],
    db: DB,
    who: Caller,
) -> ReviewOut:
    """Accept or reject the latest suggested fix of a TypeScript error. Accepted fixes become
    retrieval examples for later batches (``patterns errors accept|reject`` does the same)."""
    status = await call(review, db, error_id, verdict == "accept", project_id=who.project_id)
    return ReviewOut(id=error_id, status=status.value)  # type: ignore[arg-type]
