"""The stages' declared interfaces (``typing.Protocol``): what the agent's shell asks of a recognizer and a
synthesizer, which the embedded models and the ones by URL implement alike (``tests/test_agent_layout.py`` checks
every implementation against them). The responder's is the ``shell.responders.Responder`` base class.

Optional capabilities are separate protocols, asked for by ``isinstance``, not by reaching for attributes:
``Configurable`` (a session's transcription language and prompt), and for a recognizer that decodes at pauses,
``Peeking`` (``peek_draft``: the decode so far, and the beam's refinement to run after it).
"""

from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable


@runtime_checkable
class Recognizer(Protocol):
    """One call's recognizer (blocking methods, run on the call's recognizer thread): an utterance is ``start``-ed,
    fed 20 ms of 16 kHz s16le PCM at a time (``feed`` returns the partial hypothesis, "" if it makes none),
    ``finish``-ed (its text) or ``cancel``-led; ``reset`` returns it to the model's defaults for the next call."""

    name: str
    partials: bool  # feed returns partial hypotheses (else each decode is one transcription delta)
    active: bool  # an utterance is open

    def start(self) -> None: ...

    def feed(self, pcm16k: bytes) -> str: ...

    def finish(self) -> str: ...

    def cancel(self) -> None: ...

    def reset(self) -> None: ...


@runtime_checkable
class Configurable(Protocol):
    """A recognizer that takes a session's ``audio.input.transcription`` language and prompt."""

    def configure(self, language: str | None = None, prompt: str | None = None) -> None: ...


def decode_hints(language: str | None, prompt: str | None) -> dict:
    """A session's language and prompt as the keyword arguments a decode takes (the empty ones left out)."""
    return {k: v for k, v in (("language", language), ("prompt", prompt)) if v}


@runtime_checkable
class Peeking(Protocol):
    """A recognizer that decodes the utterance so far at a pause and keeps listening."""

    def peek_draft(self): ...


@runtime_checkable
class Synthesizer(Protocol):
    """A voice: ``synthesize`` yields s16le PCM at ``rate_of(voice)`` as it is made (a piece at a time)."""

    name: str

    def rate_of(self, voice: str | None = None) -> int: ...

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> Iterator[bytes]: ...
