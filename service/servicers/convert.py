"""Domain records to protobuf messages, and update masks from protobuf to field lists."""

from __future__ import annotations

from datetime import UTC, datetime

from blog.v1 import resources_pb2
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from service.domain import validation
from service.domain.entities import PostRecord, UserRecord, etag_of

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    # Same result as Timestamp.FromDatetime for the aware datetimes asyncpg returns, at a
    # fraction of its cost (it runs several times per returned row).
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def user_message(user: UserRecord) -> resources_pb2.User:
    message = resources_pb2.User(
        id=user.id,
        email=user.email,
        username=user.username,
        is_active=user.is_active,
        is_superuser=user.is_superuser,
        created_at=timestamp(user.created_at),
        etag=etag_of(user.version),
    )
    if user.updated_at is not None:
        message.updated_at.CopyFrom(timestamp(user.updated_at))
    return message


def post_message(post: PostRecord) -> resources_pb2.Post:
    message = resources_pb2.Post(
        id=post.id,
        author_id=post.author_id,
        title=post.title,
        content=post.content,
        published=post.published,
        created_at=timestamp(post.created_at),
        etag=etag_of(post.version),
        author=user_message(post.author),
    )
    if post.updated_at is not None:
        message.updated_at.CopyFrom(timestamp(post.updated_at))
    return message


# --- upper bounds of the converted sizes, for cutting responses without encoding them -----------
#
# A message's size is its text plus everything else (ids, flags, timestamps, etag, tags and
# length prefixes). "Everything else" is measured once, at import, on the largest record there
# can be with empty text, plus the most the text's length prefixes can add; the text is counted
# per record from its strings (len for ASCII, which Python knows without scanning).

_LAST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_MAX_INT = 2**63 - 1
_LONGEST_USER = UserRecord(_MAX_INT, "", "", True, True, _LAST, _LAST, _MAX_INT)
_LONGEST_POST = PostRecord(_MAX_INT, _MAX_INT, "", "", True, _LAST, _LAST, _MAX_INT, _LONGEST_USER)
# What a string or message field adds besides its content: a tag (field numbers below 16) and
# its length (a varint; 5 bytes hold any length below 32 GiB).
_FIELD_OVERHEAD = 1 + 5
USER_FIXED_BYTES = user_message(_LONGEST_USER).ByteSize() + 2 * _FIELD_OVERHEAD  # + 2 strings
# + 4 strings (title, content, the author's email and username) + the author's length growing
POST_FIXED_BYTES = post_message(_LONGEST_POST).ByteSize() + 4 * _FIELD_OVERHEAD + 5


def _utf8_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def user_size_bound(user: UserRecord) -> int:
    """At least `user_message(user).ByteSize()`, plus its tag and length as a repeated element."""
    return _FIELD_OVERHEAD + USER_FIXED_BYTES + _utf8_bytes(user.email) + _utf8_bytes(user.username)


def post_size_bound(post: PostRecord) -> int:
    """At least `post_message(post).ByteSize()`, plus its tag and length as a repeated element."""
    author = post.author
    return (
        _FIELD_OVERHEAD
        + POST_FIXED_BYTES
        + _utf8_bytes(post.title)
        + _utf8_bytes(post.content)
        + _utf8_bytes(author.email)
        + _utf8_bytes(author.username)
    )


def masked_fields(
    request: Message,
    resource: Message,
    resource_field: str,
    updatable: tuple[str, ...],
    v: validation.Violations,
) -> list[str]:
    """The fields an Update changes (AIP-134).

    With an update_mask: its paths, each one of `updatable`, or "*" for all of them.
    Without one: every updatable field set to a non-default value.
    """
    if request.HasField("update_mask"):
        mask: field_mask_pb2.FieldMask = request.update_mask  # type: ignore[attr-defined]
        paths = list(mask.paths)
        if paths == ["*"]:
            return list(updatable)
        fields: list[str] = []
        for i, path in enumerate(paths):
            name = path.removeprefix(f"{resource_field}.")
            if name not in updatable:
                v.add(
                    f"update_mask.paths[{i}]",
                    f"{path!r} is not an updatable field; use one of {', '.join(updatable)} or '*'",
                )
            elif name not in fields:
                fields.append(name)
        v.check(bool(paths), "update_mask.paths", "must name at least one field, or '*'")
        return fields
    fields = [name for name in updatable if getattr(resource, name)]
    v.check(
        bool(fields),
        "update_mask",
        f"nothing to update: set a field or send an update_mask naming {', '.join(updatable)}",
    )
    return fields
