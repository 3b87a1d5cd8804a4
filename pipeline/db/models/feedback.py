"""Tables of people's verdicts on our GitHub feedback comments: the comments we posted with the
patterns each listed (``feedback_comments``), and the ledger of verdicts read from their
reactions and replies (``feedback_verdicts``), one row per comment, listed pattern and person,
each backed by one ``pattern_validations`` row (:mod:`pipeline.github.verdicts`)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db.models.base import Base, _created, _project_fk
from pipeline.db.status import ValidationResult, VerdictSource, check_in


class FeedbackComment(Base):
    """One feedback comment of ours on GitHub: where it is (``repo``, ``issue_number``), the
    delivery it answered, the patterns it listed (``pattern_ids``, UUID strings, in table
    order) and when its verdicts were last read (``polled_at``; NULL: never)."""

    __tablename__ = "feedback_comments"
    comment_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    project_id: Mapped[uuid.UUID] = _project_fk()
    delivery_id: Mapped[str | None] = mapped_column(Text)
    repo: Mapped[str] = mapped_column(Text)
    issue_number: Mapped[int] = mapped_column(Integer)
    pattern_ids: Mapped[list[Any]] = mapped_column()
    posted_at: Mapped[dt.datetime] = _created()
    polled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("ix_feedback_comments_thread", "repo", "issue_number"),
        Index("ix_feedback_comments_posted", "posted_at"),
    )


class FeedbackVerdict(Base):
    """A person's verdict on one pattern a feedback comment listed: ``confirmed`` or
    ``contradicted``, from a reaction (👍/👎 on the comment, ``source_id`` the reaction's id) or
    a reply quoting the pattern (``source_id`` the reply's comment id). ``validation_id`` is the
    ``pattern_validations`` row it stands for (deleted with it: a merge that drops the row lets
    the next poll write it again on the surviving pattern)."""

    __tablename__ = "feedback_verdicts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = _project_fk()
    comment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("feedback_comments.comment_id", ondelete="CASCADE")
    )
    pattern_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("patterns.id", ondelete="CASCADE")
    )
    login: Mapped[str] = mapped_column(Text)
    result: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    source_id: Mapped[int] = mapped_column(BigInteger)
    validation_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("pattern_validations.id", ondelete="CASCADE")
    )
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        UniqueConstraint("comment_id", "pattern_id", "login", name="uq_feedback_verdicts_vote"),
        check_in("result", ValidationResult, "feedback_verdicts_result_check"),
        check_in("source", VerdictSource, "feedback_verdicts_source_check"),
        Index("ix_feedback_verdicts_validation", "validation_id"),
    )
