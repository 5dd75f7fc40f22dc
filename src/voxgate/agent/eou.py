"""End of utterance from what was said (sans-IO): does a transcript sound like a finished turn?

``semantic_vad`` asks this at the pause that starts partial inference (``turns.TurnTaker.judge``). This first model
reads the words: a turn that stops on a word that cannot end a sentence ("Set a timer for"), on a filler ("um"),
or on a comma or an ellipsis sounds unfinished; anything else sounds finished. Moonshine's punctuation helps (it
writes "for..." and "minutes, please."); PocketSphinx gives bare words, and the word rules still apply.
Written here because the models that judge this from audio or text (Smart Turn, LiveKit's turn detector) either
do not ship in a package or followed trailing silence more than words on voices they were not tuned on
(issue 13); this is the baseline they must beat.
"""

from __future__ import annotations

import re

# words after which an English sentence almost never ends
OPEN_WORDS = frozenset("""
a an the and or but so because if then than that which who whom whose where when while as of to for from in on at by
with without about into onto over under between after before during like my your his her its our their this these
those is are was were be been being am do does did have has had can could will would shall should may might must
i you he she we they it me him us them um uh er erm hmm well also very really just not no please
""".split())


def complete(transcript: str) -> bool:
    """True if ``transcript`` sounds like a finished turn (an empty one too: nothing is waiting to be said)."""
    text = transcript.strip()
    if not text:
        return True
    if text.endswith(("...", "…", ",", "-", ";", ":")):
        return False
    words = re.findall(r"[a-z']+", text.lower())
    if not words:
        return True
    last = words[-1]
    if last == "please" and len(words) > 1:  # "twenty minutes, please." ends; "please" alone is a request opener
        return True
    return last not in OPEN_WORDS
