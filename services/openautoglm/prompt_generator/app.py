"""The prompt-generator's wiring: its servicer on the shared bootstrap, and the storage its
replicas share for study registrations. It needs no NATS: every question carries the trials it
is about, from the gateway that owns them."""
from __future__ import annotations

from openautoglm.common import sandbox
from openautoglm.common.config import ServiceSettings, sqlalchemy_url
from openautoglm.prompt_generator.service import PromptGeneratorServicer
from openautoglm.prompt_generator.studies import StudyRegistry
from openautoglm.prompt_generator.trainer_model import TrainerGenerator
from openautoglm.prompt_generator.writer import InstructionWriter
from openautoglm.v1 import prompt_generator_pb2, prompt_generator_pb2_grpc


class PromptGeneratorApp:
    service_names = (prompt_generator_pb2.DESCRIPTOR.services_by_name["PromptGenerator"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        storage = sqlalchemy_url(settings.prompt_generator_storage) or f"sqlite:///{settings.service_dir() / 'registrations.db'}"
        writer = None
        if settings.prompt_model_on == "trainer":  # generation where the GPUs are
            writer = InstructionWriter(TrainerGenerator.from_settings(settings))
        elif settings.prompt_model:
            writer = InstructionWriter.local(settings.prompt_model, settings.prompt_model_seconds)
        self.registry = StudyRegistry(storage, writer, sandbox.read_roots(settings.data_dir))

    def register(self, server):
        prompt_generator_pb2_grpc.add_PromptGeneratorServicer_to_server(PromptGeneratorServicer(self.registry), server)

    async def start(self):
        return None

    async def stop(self):
        return None
