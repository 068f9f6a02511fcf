"""`PromptModel.Complete`: the instruction-writing model a trainer hosts for the prompt-generator,
so generation runs where the GPUs are. The model is the one this trainer's own
OPENAUTOGLM_PROMPT_MODEL names (a caller never sends a path); it loads on the first question and
generates in a worker thread, one question at a time, beside the trials this trainer runs.
"""
from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor

import grpc

from openautoglm.common.text_generation import GenerationError, LocalGenerator
from openautoglm.v1 import trainer_pb2, trainer_pb2_grpc

# The longest meta-prompt accepted, in characters (OPRO's, with 20 scored instructions and a few
# examples, is a few thousand).
MAX_PROMPT_CHARS = 32_768


class PromptModelServicer(trainer_pb2_grpc.PromptModelServicer):
    def __init__(self, generator: LocalGenerator | None):
        self.generator = generator
        # Its own worker (the generator answers one question at a time anyway), so questions
        # queued at shutdown are dropped instead of holding the process's default executor.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt-model")

    def close(self) -> None:
        """Drop the questions not started; the one generating ends within its time budget."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def Complete(self, request, context):
        if not request.prompt.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt: required")
        if len(request.prompt) > MAX_PROMPT_CHARS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"prompt: {len(request.prompt)} characters, at most {MAX_PROMPT_CHARS}")
        if not math.isfinite(request.max_seconds) or request.max_seconds < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_seconds: must be a finite number >= 0")
        if self.generator is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "this trainer hosts no prompt model (set OPENAUTOGLM_PROMPT_MODEL on it)")
        generator = self.generator
        assert generator is not None
        try:
            text, device = await asyncio.get_running_loop().run_in_executor(
                self._worker, _answer, generator, request.prompt, request.seed, request.max_seconds)
        except GenerationError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        return trainer_pb2.CompleteResponse(text=text, device=device)


def _answer(generator: LocalGenerator, prompt: str, seed: int, max_seconds: float) -> tuple[str, str]:
    """The completion and where it ran, in one worker-thread hop (`device` waits on the
    generator's lock like `complete`)."""
    return generator.complete(prompt, seed, max_seconds), generator.device
