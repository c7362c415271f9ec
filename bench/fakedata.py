"""Plausible, deterministic field values shared by the seeder and the bare server.

Both use the same generators so that the bare server's responses have the shapes and sizes of
the real service's (names, e-mails, titles, post bodies of a few hundred characters).
"""

from __future__ import annotations

import random

# fmt: off
FIRST_NAMES = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "karl",
    "liam", "mallory", "nina", "oscar", "peggy", "quentin", "rupert", "sybil", "trent", "ursula",
    "victor", "wendy", "xavier", "yvonne", "zack", "olga", "pavel", "sven", "ingrid", "tariq",
    "mei", "kenji", "amara", "diego", "lucia", "noor", "elif", "bruno", "chidi"
)
LAST_NAMES = (
    "smith", "jones", "brown", "taylor", "wilson", "davies", "evans", "thomas", "johnson",
    "roberts", "walker", "wright", "robinson", "thompson", "white", "hughes", "edwards", "green",
    "hall", "wood", "harris", "lewis", "martin", "jackson", "clarke", "clark", "turner", "hill",
    "scott", "cooper", "morris", "ward", "moore", "king", "watson", "baker", "harrison", "morgan",
    "patel", "young", "allen"
)
_WORDS = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
    "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua", "enim",
    "ad", "minim", "veniam", "quis", "nostrud", "exercitation", "ullamco", "laboris", "nisi",
    "aliquip", "ex", "ea", "commodo", "consequat", "duis", "aute", "irure", "in", "reprehenderit",
    "voluptate", "velit", "esse", "cillum", "fugiat", "nulla", "pariatur", "excepteur", "sint",
    "occaecat", "cupidatat", "non", "proident", "sunt", "culpa", "qui", "officia", "deserunt",
    "mollit", "anim", "id", "est", "laborum", "postgres", "grpc", "python", "async", "latency",
    "throughput", "index", "query", "cursor", "replica", "pool"
)
TITLE_WORDS = (
    "notes", "on", "thoughts", "about", "field", "report", "the", "case", "for", "against", "why",
    "how", "we", "a", "tale", "of", "lessons", "from", "scaling", "debugging", "shipping",
    "measuring", "python", "postgres", "grpc", "queues", "caches", "indexes", "streams",
    "migrations", "weekends", "gardens", "coffee", "trains", "mountains"
)
# fmt: on
EMAIL_DOMAIN = "bench.example"

_rng = random.Random(20240501)
#: One long text; post bodies are slices of it (cheap to cut, realistic to send).
CORPUS = " ".join(_rng.choice(_WORDS) for _ in range(40_000))


def email(n: int) -> str:
    """The e-mail of seeded user number `n`: user<n>@bench.example (a ghz template can make it)."""
    return f"user{n}@{EMAIL_DOMAIN}"


def username(n: int) -> str:
    """The username of seeded user number `n` (unique per `n`)."""
    return f"{first_name(n)}_{last_name(n)}_{n}"


def first_name(n: int) -> str:
    """A first name; `ListUsers(query=<first name>)` matches about 1/40 of the users."""
    return FIRST_NAMES[n % len(FIRST_NAMES)]


def last_name(n: int) -> str:
    """A last name, independent of the first one."""
    return LAST_NAMES[(n // len(FIRST_NAMES)) % len(LAST_NAMES)]


def title(n: int) -> str:
    """A post title of 20..70 characters."""
    words = [TITLE_WORDS[(n * 7 + i * 13) % len(TITLE_WORDS)] for i in range(3 + n % 6)]
    return f"{' '.join(words).capitalize()} #{n}"


def content(n: int) -> str:
    """A post body of 80..1,000 characters (about 430 on average)."""
    length = 80 + (n * 7919) % 920
    start = (n * 104_729) % (len(CORPUS) - length)
    return CORPUS[start : start + length]
