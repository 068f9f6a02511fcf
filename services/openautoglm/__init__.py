"""Open-AutoGLM. The SDK is importable from the top: `from openautoglm import AutoTrainer, Client`
(loaded on first use, so importing a service's module does not pull the SDK in).

`openautoglm` spans two source roots (services/ and gateway/, see pyproject.toml); extend_path
keeps `openautoglm.gateway` importable from the other root."""
from __future__ import annotations

from pkgutil import extend_path
from typing import Any

__path__ = extend_path(__path__, __name__)
__all__ = ["AutoTrainer", "Client", "ClientError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from openautoglm import client

        return getattr(client, name)
    raise AttributeError(f"module 'openautoglm' has no attribute {name!r}")
