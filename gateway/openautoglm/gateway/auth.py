"""The public API's door: every call to Studies, Keys, Artifacts or Models carries `authorization: Bearer <secret>`.

No or an unknown/revoked key -> UNAUTHENTICATED; a key whose role is below the method's ->
PERMISSION_DENIED. The caller's `Principal` (key id, tenant, role) is then available to the
servicers through `current()`, which scope every study to its tenant. Health and reflection
stay open (probes and tooling).
"""
from __future__ import annotations

import contextvars

import grpc

from openautoglm.common.server import guarded
from openautoglm.gateway.keys import KeyStore, Principal
from openautoglm.v1 import artifacts_pb2, cluster_pb2, keys_pb2, models_pb2, studies_pb2

_STUDIES = studies_pb2.DESCRIPTOR.services_by_name["Studies"].full_name
_CLUSTER = cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name
_KEYS = keys_pb2.DESCRIPTOR.services_by_name["Keys"].full_name
_ARTIFACTS = artifacts_pb2.DESCRIPTOR.services_by_name["Artifacts"].full_name
_MODELS = models_pb2.DESCRIPTOR.services_by_name["Models"].full_name
# The least role each public method needs.
METHOD_ROLES = {
    f"/{_STUDIES}/GetStudy": keys_pb2.ROLE_READER,
    f"/{_STUDIES}/ListStudies": keys_pb2.ROLE_READER,
    f"/{_STUDIES}/WatchStudy": keys_pb2.ROLE_READER,
    f"/{_STUDIES}/CreateStudy": keys_pb2.ROLE_MEMBER,
    f"/{_STUDIES}/CancelStudy": keys_pb2.ROLE_MEMBER,
    f"/{_STUDIES}/ExportBest": keys_pb2.ROLE_MEMBER,
    f"/{_ARTIFACTS}/GetArtifact": keys_pb2.ROLE_READER,
    f"/{_ARTIFACTS}/ListArtifacts": keys_pb2.ROLE_READER,
    f"/{_ARTIFACTS}/UploadArtifact": keys_pb2.ROLE_MEMBER,
    f"/{_ARTIFACTS}/DeleteArtifact": keys_pb2.ROLE_MEMBER,
    f"/{_MODELS}/ListModels": keys_pb2.ROLE_READER,
    f"/{_MODELS}/GetModel": keys_pb2.ROLE_READER,
    f"/{_MODELS}/DownloadModel": keys_pb2.ROLE_READER,
    f"/{_MODELS}/Predict": keys_pb2.ROLE_READER,
    f"/{_MODELS}/Generate": keys_pb2.ROLE_READER,
    f"/{_MODELS}/RegisterModel": keys_pb2.ROLE_MEMBER,
    f"/{_MODELS}/SetAlias": keys_pb2.ROLE_MEMBER,
    f"/{_MODELS}/DeleteModel": keys_pb2.ROLE_MEMBER,
    f"/{_MODELS}/Deploy": keys_pb2.ROLE_MEMBER,
    f"/{_MODELS}/Undeploy": keys_pb2.ROLE_MEMBER,
    f"/{_STUDIES}/GetParameterImportance": keys_pb2.ROLE_READER,
    f"/{_CLUSTER}/ListTrainers": keys_pb2.ROLE_READER,
    f"/{_KEYS}/CreateKey": keys_pb2.ROLE_ADMIN,
    f"/{_KEYS}/ListKeys": keys_pb2.ROLE_ADMIN,
    f"/{_KEYS}/RevokeKey": keys_pb2.ROLE_ADMIN,
}
PUBLIC_SERVICES = (f"/{_STUDIES}/", f"/{_KEYS}/", f"/{_ARTIFACTS}/", f"/{_MODELS}/", f"/{_CLUSTER}/")

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("openautoglm_principal", default=None)


def current() -> Principal:
    """The caller of the RPC being served (set by ApiKeyAuth)."""
    principal = _principal.get()
    if principal is None:
        raise RuntimeError("no authenticated caller: is ApiKeyAuth installed?")
    return principal


def _bearer(metadata) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):].strip()
    return ""


class ApiKeyAuth(grpc.aio.ServerInterceptor):
    def __init__(self, keys: KeyStore):
        self.keys = keys

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(PUBLIC_SERVICES):
            return handler
        secret = _bearer(handler_call_details.invocation_metadata)
        principal = self.keys.principal(secret) if secret else None
        needed = METHOD_ROLES.get(method, keys_pb2.ROLE_ADMIN)  # a method not listed: admins only
        if principal is None:
            refusal = (grpc.StatusCode.UNAUTHENTICATED,
                       "authorization: send 'Bearer <API key>' (openautoglm keys create; `up` writes the first to <data dir>/api-key)"
                       if not secret else "authorization: unknown or revoked API key")
        elif principal.role < needed:
            refusal = (grpc.StatusCode.PERMISSION_DENIED,
                       f"authorization: this key's role is {keys_pb2.Role.Name(principal.role)}; "
                       f"{method.rsplit('/', 1)[-1]} needs {keys_pb2.Role.Name(needed)}")
        else:
            refusal = None
        return _as(handler, principal, refusal)


def _as(handler: grpc.RpcMethodHandler, principal: Principal | None,
        refusal: tuple[grpc.StatusCode, str] | None) -> grpc.RpcMethodHandler:
    """`handler` run as `principal`, or refusing before any of it runs."""

    async def admit(context, request) -> None:
        if refusal:
            await context.abort(*refusal)
        _principal.set(principal)

    return guarded(handler, admit)
