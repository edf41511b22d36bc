"""The CodeTether worker wire contract, shared by the server, the worker and the operator."""

from codetether_contract.client import (
    ApiError,
    BadRequestError,
    CodetetherClient,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ServerUnavailableError,
    UnauthorizedError,
    UnprocessableError,
)

__all__ = [
    "ApiError",
    "BadRequestError",
    "CodetetherClient",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "ServerUnavailableError",
    "UnauthorizedError",
    "UnprocessableError",
]
