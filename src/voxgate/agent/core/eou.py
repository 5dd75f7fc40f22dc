"""End of utterance from what was said (sans-IO): does a transcript sound like a finished turn?

``semantic_vad`` asks this at the pause that starts partial inference (``turns.TurnTaker.judge``). This first model
reads the words: a turn that stops on a word that cannot end a sentence ("Set a timer for"), on a filler ("um"),
or on a comma or an ellipsis sounds unfinished (``OPEN``); a finished question hands the floor over and is answered
soonest (``QUESTION``), and so does a finished request for something the agent says ("Tell me a fun fact about
octopuses.", "Explain ...") or one closed by "please" or "thanks"; any other finished sentence (``COMPLETE``) may still be followed by another one ("Transfer me
to the Spanish agent. Spanish, please."), so the turn taker waits a little longer on it. Moonshine's punctuation helps (it
writes "for..." and "minutes, please."); PocketSphinx gives bare words, and the word rules still apply.
Written here because the models that judge this from audio or text (Smart Turn, LiveKit's turn detector) either
do not ship in a package or followed trailing silence more than words on voices they were not tuned on
(issue 13); this is the baseline they must beat.
"""

from __future__ import annotations

import re

# words after which an English sentence almost never ends: articles, conjunctions, prepositions (not the particles
# that end phrasal verbs: "turn it on", "log in" is the exception we accept), possessives, subject pronouns,
# copulas, fillers. Object pronouns, modals and "do"/"have" end sentences all the time ("Thank you.", "Call me.",
# "Yes, I will.") and are not here.
OPEN_WORDS = frozenset("""
a an the and or but because if than of to for from in at by with without about into onto under between after
before during like my your his her its our their i he she we they am is are was were been being um uh er erm hmm
""".split())


OPEN, COMPLETE, QUESTION = "open", "complete", "question"
# how a question starts when the recognizer writes no "?" (PocketSphinx, or Moonshine on a flat voice)
QUESTION_WORDS = frozenset("""
what what's whats who who's whom whose where where's when why how how's which is are was were am do does did
can could will would shall should may might must have has had isn't aren't don't doesn't didn't can't won't
""".split())


# a sentence that starts with one of these asks the agent to say something: it hands the floor over like a question
REQUEST_WORDS = frozenset("""
tell explain describe recommend suggest define summarize summarise translate name list spell recite
""".split())
# ... and so does a finished sentence that ends on one of these
CLOSING_WORDS = frozenset("please thanks".split())


def verdict(transcript: str) -> str:
    """``OPEN``, ``COMPLETE`` or ``QUESTION``: how the turn so far sounds (an empty one is complete)."""
    text = transcript.strip()
    if not text:
        return COMPLETE
    if text.endswith(("...", "…", ",", "-", ";", ":")):
        return OPEN
    words = re.findall(r"[a-z']+", text.lower())
    if not words:
        return COMPLETE
    if text.endswith("?"):
        return QUESTION  # "What is the weather like?", "Where are you from?": a question may end on a preposition
    last = words[-1]
    if re.findall(r"[a-z0-9']+", text.lower())[-1] in ("2", "4") and not text.endswith((".", "!")):
        return OPEN  # Moonshine writes an unfinished "Set a timer for" as "2 to timer 4": "for" and "to" as digits
    if last in OPEN_WORDS and not (last == "please" and len(words) > 1):
        return OPEN  # "twenty minutes, please." ends; "please" alone is a request opener
    sentence = re.split(r"[.!?]\s+", text.rstrip(" .!?"))[-1]  # the last sentence said
    first = re.findall(r"[a-z']+", sentence.lower())
    if first and first[0] in QUESTION_WORDS and not text.endswith("!"):
        return QUESTION
    if first and (first[0] in REQUEST_WORDS or (len(first) > 1 and first[-1] in CLOSING_WORDS)
                  or first[-2:] == ["thank", "you"]):
        return QUESTION  # a request or a closing courtesy: the floor is handed over
    return COMPLETE


# what a listener says or does over a speaker without taking the turn: agreement, acknowledgement, surprise,
# fillers, and what a recognizer makes of a cough or a laugh ("Ha ha.", "Hm.", nothing)
BACKCHANNEL_WORDS = frozenset("""
mm mmm mhm mm-hmm mm-hm mmhmm mhmm hm hmm hmmm uh-huh uhhuh uh huh um ah oh ooh aha wow yeah yea yep yup yes ya
okay ok alright right sure cool nice great good i see got it true totally exactly indeed ha haha hahaha heh hehe
""".split())
# words that take the floor however short: stop, wait, no, a question
INTERRUPT_WORDS = frozenset("""
stop wait no hold hang sorry excuse pardon hey but actually listen enough cancel quiet shut pause why what how who
where when which
""".split())
HUM = re.compile(r"[mhnu]+|(?:ha|he|hi)+h?")  # a hum or a laugh written out: "Mmhmm", "M. h. m.", "Hahaha"
SHORT_MS = 600  # held speech this short is a backchannel unless it has an interrupt word: a recognizer finds words
# in a hum or a cough ("He dreamed.", "Very true."), people rarely take the floor in under 0.6 s without one
NOT_WORDS = 0.05  # a decode this unsure of its words (transcribe_scored) made words out of a laugh or a noise


def is_backchannel(transcript: str, speech_ms: int | None = None, sure: float = 1.0, max_words: int = 3) -> bool:
    """Does speech over the agent sound like a backchannel (or a noise), not a turn? ``speech_ms``: how long it
    was speech; ``sure``: the recognizer's certainty. An interrupt word makes it a turn; else a decode that could
    not make words of it, backchannel words only (at most ``max_words``), or anything under ``SHORT_MS`` is not."""
    lower = transcript.lower()
    words = re.findall(r"[a-z']+", lower)
    if any(w in INTERRUPT_WORDS for w in words):
        return False
    if sure < NOT_WORDS:
        return True
    joined = re.findall(r"[a-z]+(?:-[a-z]+)*", lower)  # "mm-hm" as one word too
    if all(HUM.fullmatch(w) for w in words) or (len(words) <= max_words and (
            all(w in BACKCHANNEL_WORDS for w in words) or all(w in BACKCHANNEL_WORDS for w in joined))):
        return True
    return speech_ms is not None and speech_ms < SHORT_MS
