"""Prompt frames by name, loaded once from the prompt directory."""

from __future__ import annotations

from pathlib import Path

from gateway.core.contracts import Frame
from gateway.media.prompts import PromptError, frames, load_wav

__all__ = ["PromptLibrary", "PromptNotFound"]


class PromptNotFound(Exception):
    """No usable prompt file by that name."""

    def __init__(self, prompt: str, message: str) -> None:
        super().__init__(message)
        self.prompt = prompt


class PromptLibrary:
    """Prompts are `<name>.wav` files (8 kHz mono) in one directory, cut into 20 ms frames
    on first use and kept; a name is never a path."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, list[Frame]] = {}

    def get(self, name: str) -> list[Frame]:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise PromptNotFound(name, f"invalid prompt name {name!r}")
        path = self.directory / f"{name}.wav"
        if not path.exists():
            raise PromptNotFound(name, f"prompt {name!r} not found in {self.directory}")
        try:
            loaded = frames(load_wav(path))
        except PromptError as exc:
            raise PromptNotFound(name, f"prompt {name!r} is unusable: {exc}") from exc
        self._cache[name] = loaded
        return loaded
