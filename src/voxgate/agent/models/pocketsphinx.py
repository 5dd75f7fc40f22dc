"""PocketSphinx: streaming recognition with partial hypotheses (the ASR where Moonshine's wheel does not exist)."""

from __future__ import annotations

from . import MissingModel


class PocketSphinxAsr:
    """Streaming recognition at 16 kHz; one decoder per call (they are not shared across threads).

    The decoder adapts its cepstral mean to the voice it hears and keeps it across utterances: good within a
    call, but a pooled decoder must forget the previous caller, so ``reset`` restores the model's initial mean."""

    name = "pocketsphinx"
    partials = True  # feed returns the decoder's partial hypothesis

    def __init__(self):
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise MissingModel("the PocketSphinx recognizer", "pocketsphinx") from None
        self.decoder = Decoder(loglevel="FATAL")
        self.initial_cmn = self.decoder.get_cmn(False)
        self.active = False

    def reset(self):
        """Forget the last call: end any open utterance, restore the initial cepstral mean."""
        self.finish()
        self.decoder.set_cmn(self.initial_cmn)

    def start(self):
        """Begin an utterance (one still open is dropped: feed() may have opened it already)."""
        if self.active:
            self.decoder.end_utt()
        self.decoder.start_utt()
        self.active = True

    def feed(self, pcm16k: bytes) -> str:
        """Add audio; return the current partial hypothesis ('' if none yet)."""
        if not self.active:
            self.start()
        self.decoder.process_raw(pcm16k, False, False)
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def cancel(self):
        """End the utterance and forget it (the input buffer was cleared)."""
        if self.active:
            self.decoder.end_utt()
            self.active = False

    def finish(self) -> str:
        """End the utterance (blocking, tens of ms: call it off the event loop); return the final text."""
        if not self.active:
            return ""
        self.decoder.end_utt()
        self.active = False
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""
