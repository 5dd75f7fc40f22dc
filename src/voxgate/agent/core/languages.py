"""Languages (sans-IO data): what a stack's recognizer hears and its voice speaks, the names of the commonest
ISO-639-1 codes, and how a reply is asked to be in the caller's language."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Languages:
    """What the stack's stages can do with a language: ``asr`` hears, ``voice`` speaks (None: any; a remote model
    is taken at its word), ``any_voice``: a voice name the stack does not know is passed on (a remote voice)."""

    asr: tuple | None = ("en",)
    voice: tuple | None = ("en",)
    any_voice: bool = False


LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "ru": "Russian", "uk": "Ukrainian",
                  "tr": "Turkish", "ar": "Arabic", "hi": "Hindi", "ja": "Japanese", "ko": "Korean", "zh": "Chinese",
                  "sv": "Swedish", "da": "Danish", "no": "Norwegian", "fi": "Finnish", "cs": "Czech", "el": "Greek",
                  "he": "Hebrew", "id": "Indonesian", "vi": "Vietnamese", "th": "Thai", "ro": "Romanian",
                  "hu": "Hungarian", "ca": "Catalan"}


def with_language(instructions: str, language: str | None) -> str:
    """The instructions, and the caller's language when it is not English."""
    if not language or language == "en":
        return instructions
    name = LANGUAGE_NAMES.get(language, language)
    return f"{instructions.rstrip()}\n\nThe user speaks {name}: always answer in {name}."
