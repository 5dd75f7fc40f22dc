"""The voices a session may ask for by ``audio.output.voice``: ours, and the OpenAI names mapped to them (sans-IO data;
``models/piper.py`` makes them, ``schema.py`` checks a request against them).

One speaker ships in a package (Piper's joe), so the others are that speaker with a scaled vocal tract: see
``models/piper.py``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Voice:
    name: str
    pitch: float  # k: vocal tract and pitch scaled by k (1.0: the speaker as recorded)
    description: str


VOICES = {v.name: v for v in (
    Voice("joe", 1.0, "the recorded speaker, a US English male voice"),
    Voice("juniper", 1.3, "joe's voice raised by 30 %: lighter and higher"),
    Voice("river", 1.16, "joe's voice raised by 16 %"),
    Voice("basalt", 0.88, "joe's voice lowered by 12 %: deeper"),
)}
DEFAULT_VOICE = "joe"
# the OpenAI Realtime voices, each mapped to the nearest of ours (higher voices to the raised ones)
OPENAI_VOICES = {"alloy": "joe", "echo": "joe", "ash": "basalt", "ballad": "basalt", "cedar": "basalt",
                 "verse": "river", "sage": "river", "coral": "juniper", "shimmer": "juniper", "marin": "juniper",
                 # GPT-Live's further names
                 "beacon": "joe", "tempo": "joe", "bossa": "basalt", "cinder": "basalt", "stone": "basalt",
                 "delta": "river", "meridian": "river", "ripple": "river", "gleam": "juniper", "quartz": "juniper",
                 "shida": "juniper", "vesper": "juniper", "willow": "juniper"}


def resolve_voice(name: str | None) -> Voice:
    """Our voice for a requested name (ours or an OpenAI one); ``ValueError`` listing the voices for any other."""
    if name is None:
        return VOICES[DEFAULT_VOICE]
    key = OPENAI_VOICES.get(name, name)
    if key not in VOICES:
        raise ValueError(f"unknown voice {name!r}; voices: {', '.join(VOICES)} "
                         f"(and the OpenAI names {', '.join(OPENAI_VOICES)})")
    return VOICES[key]
