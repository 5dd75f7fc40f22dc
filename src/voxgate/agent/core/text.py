"""A reply's text on its way to speech (sans-IO): ``SpokenText`` holds a model's streamed reply to what can be
said, ``Chunker`` cuts it into pieces for the synthesizer so the first audio comes early."""

from __future__ import annotations

import re


class SpokenText:
    """A small model's streamed reply, held to what a voice reply should be (sans-IO): markdown a speaker cannot
    say (``*``, ``#``, list numbers, line breaks) dropped, and the reply ended after ``max_sentences`` sentences.

    SmolLM2-135M ignores "one or two short sentences" about one time in three ("Sure, here's a simple guide ...
    1. *", 60 tokens of it): the user then listens to 15 s of speech, and every answer runs into the next
    question. ``push(piece)`` returns the text to pass on and whether the reply is over; ``flush()`` what is left
    at its end. ``max_sentences`` 0 keeps every sentence."""

    _END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
    _HELD = re.compile(r"(?:\n[\s\d.)*#+-]*|\d+|[*#_`]+)$")  # may still become a list marker or markup
    _ABBREVIATIONS = frozenset("mr mrs ms dr st vs etc jr sr prof no".split())

    def __init__(self, max_sentences: int = 2, said: str = ""):
        self.max_sentences = max_sentences
        self.raw = said  # everything the model said (``said``: a reply being continued, passed on already)
        self.passed = len(self.clean(said))  # how much of the cleaned text has been passed on

    def push(self, piece: str) -> tuple[str, bool]:
        self.raw += piece
        m = self._HELD.search(self.raw)
        return self._pass(self.raw[: m.start()] if m else self.raw)

    def flush(self) -> str:
        return self._pass(self.raw + " ")[0].rstrip()

    @staticmethod
    def clean(text: str) -> str:
        text = re.sub(r"\n+\s*(?:\d+[.)]|[-*+•])\s+", " ", text.replace("\r", ""))  # list items: sentences
        return re.sub(r"[*#_`]+|\s*\n+\s*", lambda m: " " if "\n" in m.group() else "", text).lstrip()

    def _pass(self, raw: str) -> tuple[str, bool]:
        text, over = self.clean(raw), False
        if self.max_sentences:
            n = 0
            for m in self._END.finditer(text):
                word = re.search(r"([A-Za-z]+)$", text[: m.start()])
                if m.group() == "." and word and word.group(1).lower() in self._ABBREVIATIONS:
                    continue
                n += 1
                if n >= self.max_sentences:
                    text, over = text[: m.end()], True
                    break
        out = text[self.passed:]
        self.passed = max(self.passed, len(text))
        return out, over


class Chunker:
    """Cut streamed text into TTS chunks: the first as soon as a clause ends or ``first_words`` words are
    complete (so the first audio comes early: two words are ~60 ms of Piper and ~30 ms of SmolLM2, four words cost a
    turn ~60 ms more), the second at a clause or after ``4 × first_words`` words (it must be synthesized while the
    first plays: a whole long sentence would leave a gap after the first two words), later ones at sentence ends
    (commas only once a sentence is long). Models stream tokens with leading spaces (" weather"), so a word is
    complete when the next begins."""

    def __init__(self, first_words: int = 2, long_clause: int = 12):
        self.buf = ""
        self.n = 0  # chunks cut so far
        self.first_words = first_words
        self.long_clause = long_clause

    def push(self, delta: str) -> list[str]:
        self.buf += delta
        out = []
        while True:
            piece = self._cut()
            if piece is None:
                return out
            if piece:
                out.append(piece)
                self.n += 1

    def _cut(self) -> str | None:
        sentence = re.search(r"[.!?;:](\s)", self.buf)
        comma = re.search(r",(\s)", self.buf)
        early = self.n < 2  # the first two chunks: short, so the audio flows from the start
        if early or (comma and len(self.buf[: comma.start()].split()) >= self.long_clause):
            m = min((x for x in (sentence, comma) if x), key=lambda x: x.start(), default=None)
        else:
            m = sentence
        if m is not None:
            piece, self.buf = self.buf[: m.start() + 1].strip(), self.buf[m.end():]
            return piece
        # words as spoken: each digit counts as one ("140,875,776" is nine words of audio to synthesize)
        said = len(re.findall(r"\d|[^\W\d_]+", self.buf.rstrip().rsplit(" ", 1)[0])) if " " in self.buf.strip() else 0
        if early and len(self.buf.split()) > 1 and said >= self.first_words * (1 if self.n == 0 else 4):
            cut = self.buf.rstrip().rfind(" ")  # everything before the word still being streamed
            piece, self.buf = self.buf[:cut].strip(), self.buf[cut:]
            return piece
        return None

    def flush(self) -> list[str]:
        piece, self.buf = self.buf.strip(), ""
        return [piece] if piece else []
