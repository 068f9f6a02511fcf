"""The prompt model a trainer hosts (`PromptModel.Complete`), as the instruction writer's
generator: with OPENAUTOGLM_PROMPT_MODEL_ON=trainer the prompt-generator keeps no model of its
own and generation runs on the trainer's GPUs.

Proposals run in worker threads (studies.py), so this is a blocking gRPC client: mutual TLS with
the prompt-generator's certificate, the caller's trace context in the metadata. A trainer that
is away is retried a few times within the budget; if it stays away the writer reports nothing
written and the proposal falls back to a candidate of the space (never a failed trial), and for
AWAY_SECONDS its questions fail at once instead of each waiting out the retries.
"""
from __future__ import annotations

import logging
import time

import grpc

from openautoglm.common import telemetry
from openautoglm.common.config import ServiceSettings
from openautoglm.common.server import MESH_OPTIONS, blocking_channel
from openautoglm.common.text_generation import GenerationError
from openautoglm.common.tls import service_identity
from openautoglm.v1 import trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)
# Seconds a call may take beyond the generation budget: the trainer loads the model on its first
# question (a few GB from disk for a real checkpoint).
LOAD_SECONDS = 120.0
# Attempts while the trainer is unavailable, and the first pause between them (doubling).
ATTEMPTS = 3
FIRST_PAUSE_SECONDS = 0.5
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
# After a trainer stayed away through every attempt, questions fail at once for this long, so
# proposals do not each wait out the retries while it is gone.
AWAY_SECONDS = 30.0


class TrainerGenerator:
    """`TextGenerator` over gRPC to the trainer at `address` (a load-balanced name reaches any)."""

    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None, seconds: float = 20.0):
        self.address = address
        self.seconds = seconds
        self._channel = blocking_channel(address, credentials, "trainer", options=MESH_OPTIONS)
        self._stub = trainer_pb2_grpc.PromptModelStub(self._channel)
        self.device = ""  # where the last answer was generated
        self._away_until = 0.0  # time.monotonic() before which the trainer counts as away

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "TrainerGenerator":
        identity = service_identity(settings)
        return cls(settings.trainer_addr, identity.channel_credentials() if identity else None,
                   settings.prompt_model_seconds)

    def complete(self, prompt: str, seed: int) -> str:
        if time.monotonic() < self._away_until:
            raise GenerationError(f"the prompt model on the trainer at {self.address} is away; asking again in "
                                  f"{self._away_until - time.monotonic():.0f}s")
        request = trainer_pb2.CompleteRequest(prompt=prompt, seed=seed, max_seconds=self.seconds)
        metadata = tuple(telemetry.inject_headers().items())
        pause = FIRST_PAUSE_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            try:
                reply = self._stub.Complete(request, timeout=self.seconds + LOAD_SECONDS, metadata=metadata)
            except grpc.RpcError as err:
                code = err.code()
                if code in RETRYABLE and attempt < ATTEMPTS:
                    log.warning("the trainer's prompt model at %s is unavailable (%s); retrying in %.1fs",
                                self.address, code.name, pause)
                    time.sleep(pause)
                    pause *= 2
                    continue
                if code in RETRYABLE:
                    self._away_until = time.monotonic() + AWAY_SECONDS
                raise GenerationError(f"the prompt model on the trainer at {self.address}: {code.name}: "
                                      f"{err.details()}") from None
            self.device = reply.device
            return str(reply.text)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def close(self) -> None:
        self._channel.close()
