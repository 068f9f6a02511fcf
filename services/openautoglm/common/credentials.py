"""A client's side of the public API: where the key comes from, how it is sent, and how the
gateway's TLS certificate is trusted.

The key is `OPENAUTOGLM_API_KEY`, else the file `openautoglm up` writes on first start
(`<data dir>/api-key`, readable by its owner only). Every call carries it as
`authorization: Bearer <key>` (a client interceptor, so no call site can forget it).
The gateway's certificate is checked against `OPENAUTOGLM_CA_CERT`, else the mesh CA that `up`
wrote (`<data dir>/tls/ca.crt`), else the system's roots (a gateway with a public certificate).
"""
from __future__ import annotations

import os
from pathlib import Path

import grpc

from openautoglm.common.server import channel

API_KEY_VARIABLE = "OPENAUTOGLM_API_KEY"
KEY_FILE_NAME = "api-key"
CA_VARIABLE = "OPENAUTOGLM_CA_CERT"
# The same variable a service reads for --plaintext: a client of a plaintext gateway sets it too.
PLAINTEXT_VARIABLE = "OPENAUTOGLM_PLAINTEXT"


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


class _BearerKeyClientStream(_BearerKey, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(self._with_key(client_call_details), request_iterator)


class _BearerKeyBidi(_BearerKey, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(self._with_key(client_call_details), request_iterator)


def bearer_key_interceptors(key: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that add `authorization: Bearer <key>` to every call."""
    return [_BearerKeyUnary(key), _BearerKeyStream(key), _BearerKeyClientStream(key), _BearerKeyBidi(key)]


def gateway_credentials(data_dir: Path) -> grpc.ChannelCredentials | None:
    """TLS credentials for the gateway (see the module docstring); None only when plaintext was
    asked for."""
    if os.environ.get(PLAINTEXT_VARIABLE, "").strip().lower() in ("1", "true", "yes"):
        return None
    ca_file = Path(os.environ.get(CA_VARIABLE, "").strip() or data_dir / "tls" / "ca.crt")
    if ca_file.is_file():
        return grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    if os.environ.get(CA_VARIABLE):
        raise FileNotFoundError(f"{CA_VARIABLE}: no file {ca_file}")
    return grpc.ssl_channel_credentials()


def gateway_channel(address: str, key: str, credentials: grpc.ChannelCredentials | None,
                    peer: str = "") -> grpc.aio.Channel:
    """A channel to the gateway's public API (TLS with `credentials`, plaintext without) that
    authenticates every call with `key`; `peer`: the name the certificate must carry, when the
    address is not it (several replicas' addresses, say)."""
    return channel(address, credentials, peer, interceptors=bearer_key_interceptors(key))
