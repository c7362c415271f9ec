"""Bearer-token authentication for every API call when AUTH_TOKENS is set.

The chain applies it to API methods only (service.interceptors.chain): health and reflection
stay open so load balancers and grpcurl work without a token.
"""

from __future__ import annotations

import hmac
from typing import Any

from blog.v1.error_reason_pb2 import ErrorReason

from service.api import Method
from service.domain.errors import Unauthenticated
from service.interceptors.base import Context, Proceed


class AuthInterceptor:
    def __init__(self, tokens: tuple[bytes, ...]) -> None:
        self._tokens = tokens

    def _accepts(self, presented: bytes) -> bool:
        # Compare against every token, always, in constant time: neither which token
        # nor how much of one matched shows in the timing.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(presented, token)
        return matched

    async def around(self, method: Method, request: Any, context: Context, proceed: Proceed) -> Any:
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                header = value
        scheme, _, credential = header.partition(" ")
        if not header:
            raise Unauthenticated(
                "missing authorization metadata: send 'authorization: Bearer <token>'",
                reason=ErrorReason.MISSING_CREDENTIALS,
            )
        if scheme.lower() != "bearer" or not self._accepts(credential.strip().encode()):
            raise Unauthenticated("invalid bearer token", reason=ErrorReason.INVALID_TOKEN)
        return await proceed(request, context)
