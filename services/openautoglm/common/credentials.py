"""A client's side of the public API's keys: where the key comes from and how it is sent.

The key is `OPENAUTOGLM_API_KEY`, else the file `openautoglm up` writes on first start
(`<data dir>/api-key`, readable by its owner only). Every call carries it as
`authorization: Bearer <key>` (a client interceptor, so no call site can forget it).
"""
from __future__ import annotations

import os
from pathlib import Path

import grpc

from openautoglm.common.server import insecure_channel

API_KEY_VARIABLE = "OPENAUTOGLM_API_KEY"
KEY_FILE_NAME = "api-key"


class NoApiKey(RuntimeError):
    """Neither the variable nor the key file gives a key."""


def api_key(data_dir: Path) -> str:
    """The caller's API key: the environment's, else the one `up` wrote under `data_dir`."""
    key = os.environ.get(API_KEY_VARIABLE, "").strip()
    if key:
        return key
    key_file = data_dir / KEY_FILE_NAME
    try:
        return key_file.read_text().strip()
    except OSError:
        raise NoApiKey(f"no API key: set {API_KEY_VARIABLE}, or start the stack (`openautoglm up`), "
                       f"which writes one to {key_file}") from None


class _BearerKey:
    def __init__(self, key: str):
        self._header = ("authorization", f"Bearer {key}")

    def _with_key(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                          details.wait_for_ready)


# One class per call shape: a channel files each interceptor under the first shape it matches.
class _BearerKeyUnary(_BearerKey, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._with_key(client_call_details), request)


class _BearerKeyStream(_BearerKey, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._with_key(client_call_details), request)


def bearer_key_interceptors(key: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that add `authorization: Bearer <key>` to every call."""
    return [_BearerKeyUnary(key), _BearerKeyStream(key)]


def gateway_channel(address: str, key: str) -> grpc.aio.Channel:
    """A channel to the gateway's public API that authenticates every call with `key`."""
    return insecure_channel(address, bearer_key_interceptors(key))
