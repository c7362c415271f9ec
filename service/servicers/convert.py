"""Domain records to protobuf messages, and update masks from protobuf to field lists."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, TypeVar

from blog.v1 import resources_pb2
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from service.domain import validation
from service.domain.entities import PostRecord, UserRecord, etag_of  # noqa: F401 (in _builder's source)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
R = TypeVar("R")
M = TypeVar("M", bound=Message)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    # Same result as Timestamp.FromDatetime for the aware datetimes asyncpg returns, at a
    # fraction of its cost (it runs several times per returned row).
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def _builder(record: type[Any], message: type[M], **extra: str) -> Callable[[Any], M]:
    """A function making a `message` from a `record`: each field of the record that the
    message has under the same name, scalars as they are (None leaves one unset), datetimes as
    Timestamps, and the `extra` fields as expressions of the record `r` (this module's names).

    Written as source and compiled once, at import, the way dataclasses writes __init__: it
    runs as fast as the constructor call one would write by hand (a loop over the field names
    costs a third more, on every resource of every response), and a field added to both the
    record and the proto is converted with no edit here.
    """
    by_name = message.DESCRIPTOR.fields_by_name
    hints = typing.get_type_hints(record)
    arguments = []
    for field in dataclasses.fields(record):
        name, kind = field.name, by_name.get(field.name)
        if kind is None or name in extra:
            continue
        if kind.message_type is None:
            arguments.append(f"{name}=r.{name}")
        elif kind.message_type is timestamp_pb2.Timestamp.DESCRIPTOR and hints[name] is datetime:
            arguments.append(f"{name}=timestamp(r.{name})")
        elif kind.message_type is timestamp_pb2.Timestamp.DESCRIPTOR:
            arguments.append(f"{name}=None if r.{name} is None else timestamp(r.{name})")
        else:
            raise TypeError(f"{record.__name__}.{name}: a {kind.message_type.full_name}: pass it")
    arguments += [f"{name}={expression}" for name, expression in extra.items()]
    source = (
        "def make(Message):\n"
        "    def build(r):\n"
        f"        return Message({', '.join(arguments)})\n"
        "    return build\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, globals(), namespace)  # this module's names, looked up when it runs
    build: Callable[[Any], M] = namespace["make"](message)
    build.__doc__ = source
    return build


def _texts(record: type[Any], message: type[Message]) -> list[str]:
    """The string fields of `record` that `message` carries."""
    hints = typing.get_type_hints(record)
    by_name = message.DESCRIPTOR.fields_by_name
    return [
        f.name for f in dataclasses.fields(record) if f.name in by_name and hints[f.name] is str
    ]


user_message = _builder(UserRecord, resources_pb2.User, etag="etag_of(r.version)")
# The post with its author's fields (never the author's posts).
post_message = _builder(
    PostRecord, resources_pb2.Post, etag="etag_of(r.version)", author="user_message(r.author)"
)


# --- upper bounds of the converted sizes, for cutting responses without encoding them -----------
#
# A message's size is its text plus everything else (ids, flags, timestamps, etag, tags and
# length prefixes). "Everything else" is measured once, at import, on the largest record there
# can be with empty text, plus the most the text's length prefixes can add; the text is counted
# per record from its strings (len for ASCII, which Python knows without scanning).

_LARGEST: dict[Any, Any] = {
    int: 2**63 - 1,
    bool: True,
    datetime: datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime | None: datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
}


def largest(record: type[R], text: str = "", **nested: Any) -> R:
    """A `record` with every field at its largest encoding (every string `text`), except the
    `nested` records given. A field of a type not known here stops the import: its size needs
    a decision."""
    hints = typing.get_type_hints(record)
    table = {**_LARGEST, str: text}
    values = {
        f.name: nested[f.name] if f.name in nested else table[hints[f.name]]
        for f in dataclasses.fields(record)  # type: ignore[arg-type]
    }
    return record(**values)


_LONGEST_USER = largest(UserRecord)
# What a string or message field adds besides its content: a tag (field numbers below 16) and
# its length (a varint; 5 bytes hold any length below 32 GiB).
_FIELD_OVERHEAD = 1 + 5
_USER_TEXTS = _texts(UserRecord, resources_pb2.User)
_POST_TEXTS = _texts(PostRecord, resources_pb2.Post)
USER_FIXED_BYTES = user_message(_LONGEST_USER).ByteSize() + len(_USER_TEXTS) * _FIELD_OVERHEAD
# + the post's strings and its author's, + the author's length growing
POST_FIXED_BYTES = (
    post_message(largest(PostRecord, author=_LONGEST_USER)).ByteSize()
    + (len(_POST_TEXTS) + len(_USER_TEXTS)) * _FIELD_OVERHEAD
    + 5
)


def _text_bytes(*paths: str) -> Callable[[Any], int]:
    """The UTF-8 size of the strings at `paths` of a record (len for ASCII, which Python
    knows without scanning): one attrgetter, no call per string, for it runs per listed item."""
    # attrgetter of several paths returns a tuple, of one path the value itself
    strings = attrgetter(*paths) if len(paths) > 1 else lambda record: (getattr(record, paths[0]),)

    def size(record: Any) -> int:
        total = 0
        for text in strings(record):
            total += len(text) if text.isascii() else len(text.encode())
        return total

    return size


_USER_TEXT_BYTES = _text_bytes(*_USER_TEXTS)
_POST_TEXT_BYTES = _text_bytes(*_POST_TEXTS, *(f"author.{name}" for name in _USER_TEXTS))


def user_size_bound(user: UserRecord) -> int:
    """At least `user_message(user).ByteSize()`, plus its tag and length as a repeated element."""
    return _FIELD_OVERHEAD + USER_FIXED_BYTES + _USER_TEXT_BYTES(user)


def post_size_bound(post: PostRecord) -> int:
    """At least `post_message(post).ByteSize()`, plus its tag and length as a repeated element."""
    return _FIELD_OVERHEAD + POST_FIXED_BYTES + _POST_TEXT_BYTES(post)


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


def update_values(
    request: Message,
    resource_field: str,
    updatable: tuple[str, ...],
    rules: dict[str, validation.Rule],
) -> dict[str, Any]:
    """An Update request checked as a whole (the resource's id, its mask, every changed field,
    its etag), and the values it changes by field; one BadRequest names everything wrong."""
    resource: Any = getattr(request, resource_field)
    with validation.Violations() as v:
        validation.resource_id(v, f"{resource_field}.id", resource.id)
        fields = masked_fields(request, resource, resource_field, updatable, v)
        validation.fields(v, f"{resource_field}.", resource, fields, rules)
        validation.token(v, f"{resource_field}.etag", resource.etag)
    return {name: getattr(resource, name) for name in fields}
