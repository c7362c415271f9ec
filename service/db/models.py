"""The database schema as SQLAlchemy 2.0 typed models. Alembic migrations are checked against it."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(100))
    # Optional: '' when the user has none (proto3's empty string), so one value means "none".
    # Its limit (100 characters) is the service's validation's: text, not varchar(100), so
    # that changing the limit is no ALTER TABLE (migrations/versions/0003).
    display_name: Mapped[str] = mapped_column(Text, server_default=text("''"))
    hashed_password: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    is_superuser: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Bumped by every update; the etag is derived from it (optimistic concurrency).
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    posts: Mapped[list[Post]] = relationship(
        back_populates="author",
        order_by="(Post.created_at.desc(), Post.id.desc())",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (
        # Unique case-insensitively; also serve GetUserByEmail and AuthenticateUser.
        Index("uq_users_lower_email", func.lower(email), unique=True),
        Index("uq_users_lower_username", func.lower(username), unique=True),
        # ListUsers: newest first, optionally filtered by is_active. A search's walk reads
        # this index alone, the lowered email and username included (migration 0005).
        Index(
            "ix_users_newest_first_search",
            created_at.desc(),
            id.desc(),
            func.lower(email).label("lower_email"),
            func.lower(username).label("lower_username"),
            postgresql_include=["email", "username", "is_active"],
        ),
        Index("ix_users_is_active_created_at_id", is_active, created_at.desc(), id.desc()),
        # ListUsers query: lower(col) LIKE '%...%' served by trigram indexes on the same
        # expressions (migration 0003 says why not ILIKE on the columns).
        Index(
            "ix_users_lower_email_trgm",
            func.lower(email).label("lower_email"),
            postgresql_using="gin",
            postgresql_ops={"lower_email": "gin_trgm_ops"},
        ),
        Index(
            "ix_users_lower_username_trgm",
            func.lower(username).label("lower_username"),
            postgresql_using="gin",
            postgresql_ops={"lower_username": "gin_trgm_ops"},
        ),
    )


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    author_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    published: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    author: Mapped[User] = relationship(back_populates="posts")

    __table_args__ = (
        # ListPosts / StreamPosts orderings, alone or with one filter.
        Index("ix_posts_created_at_id", created_at.desc(), id.desc()),
        Index("ix_posts_author_id_created_at_id", author_id, created_at.desc(), id.desc()),
        Index("ix_posts_published_created_at_id", published, created_at.desc(), id.desc()),
        Index(
            "ix_posts_title_trgm",
            title,
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
        ),
    )


class PostRequest(Base):
    """A CreatePost / BatchCreatePosts request_id (AIP-155) and what its first call created.

    Not a foreign key to posts: a post deleted since is reported as such to a retry. Rows are
    deleted a few at a time, once expired, by the statement that remembers a new request.
    """

    __tablename__ = "post_requests"

    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # SHA-256 of what the request asked for, so a reuse for a different request is told apart.
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    # The created posts in request order; NULL only inside the transaction that creates them.
    post_ids: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_post_requests_expires_at", expires_at),)
