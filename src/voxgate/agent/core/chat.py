"""The rules of a chat a voice agent holds with a language model, sans-IO: the instructions every responder starts
from, the shape a spoken reply must have (``unfit``: a reply's first words that must not be spoken; ``english``,
``foreign``), what a small model needs added (``spoken_rules``, ``as_plain_chat``, ``recent``: a window its prompt
cache keeps), tools (``chat_tools``: the chat-completions shape; ``forced_tool``; ``closed``: a schema a grammar
holds the model to; ``grounded``: a call that rests on what the user said). Pure functions of messages and text: the
responders (``shell/responders.py``, ``shell/embedded.py``, ``shell/llm_by_url.py``) use them.
"""

from __future__ import annotations

import json
import re

from .languages import with_language

# what the agent is told when the session says nothing. "The user's latest question" and "the same language as the
# question" matter to a 135M model: without them SmolLM2 answered "What is the capital of France?" with "Le Grand
# Paris ..." and drifted into French for the rest of the call (10 of 36 answers in three 12-question
# conversations), or repeated its previous answer (8 of 36); with them, none (bench/answers.py)
DEFAULT_INSTRUCTIONS = ("You are a helpful voice assistant talking with a user. Answer the user's latest question "
                        "directly, in the same language as the question, in one or two short sentences without "
                        "lists or formatting.")




def forced_tool(tools: list, tool_choice) -> dict | None:
    """The tool ``tool_choice`` names (``{"type": "function", "name"}``), if any."""
    if isinstance(tool_choice, dict):
        return next((t for t in tools if t.get("name") == tool_choice.get("name")), None)
    return None


# words a tool's name shares with many tools: they say nothing about which one the user wants
GENERIC_WORDS = {"get", "set", "the", "to", "a", "an", "of", "for", "and", "transfer", "handoff", "agent", "tool", "lookup",
            "look", "up", "fetch", "find", "current", "check", "do", "make", "run", "call", "info", "data"}


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def spoken_value(output: str) -> str:
    """A tool's output as words: a JSON object's fields as "key value", anything else as it is."""
    try:
        value = json.loads(output)
    except (TypeError, ValueError):
        return str(output)
    if isinstance(value, dict):
        return ", ".join(f"{str(k).replace('_', ' ')} {v}" for k, v in value.items())
    return str(value)



_FOREIGN_STARTS = frozenset("le la les l el los las lo il der die das un une des du je ich c est es".split())
_ENGLISH_WORDS = frozenset("what who where when why how is are was do does did can could the a an of to in and you i "
                           "my your it tell me please".split())


def english(text: str) -> bool:
    """A question in English: Latin letters without accents, and some of the commonest English words."""
    words = re.findall(r"[a-z']+", text.lower())
    letters = [c for c in text if c.isalpha()]
    return bool(words) and all(c.isascii() for c in letters) and any(w in _ENGLISH_WORDS for w in words)


def foreign(head: str) -> bool:
    """A reply whose first words are not English: accented letters, or a French, Spanish, Italian or German
    article or pronoun first ("Le Grand Paris…", "L'Alma…")."""
    if any(c.isalpha() and not c.isascii() for c in head):
        return True
    first = re.split(r"[\s'’]+", head.strip().lower(), maxsplit=1)[0].strip(".,:;!?\"")
    return first in _FOREIGN_STARTS


_LIST_START = re.compile(r"^\s*(?:\d+[.)]\s|[-*•#>|]|\w+:\s*\n)")
_DIGIT_RUN = re.compile(r"\d+(?:[.:/_-]\d+){2,}|\d{7,}")
_MARKUP = re.compile(r"[<>\[\]{}|`]|https?:|\\[a-z]")
def unfit(head: str, asked_english: bool = True) -> str | None:
    """Why a reply's first words should not be spoken (None: they may): ``foreign`` (an English question answered
    in another language), ``list`` (a numbered or bulleted list, a heading), ``digits`` ("1.1.0.2018"), ``markup``
    (brackets, tags, code, a URL: a template leaking), ``nonsense`` (no word, or one word over and over)."""
    if asked_english and foreign(head):
        return "foreign"
    if _LIST_START.search(head):
        return "list"
    if _DIGIT_RUN.search(head):
        return "digits"
    if _MARKUP.search(head):
        return "markup"
    words = re.findall(r"[^\W\d_]+", head.lower())
    if not words or (len(words) >= 3 and len(set(words)) == 1):
        return "nonsense"
    return None


def spoken_rules(instructions: str, language: str | None = None) -> str:
    """The app's instructions, followed by the rules a 135M model needs to answer in the question's language and
    in a spoken shape. Apps send their own ("You are a helpful assistant." is the commonest), which replaced the
    rules and let the model answer "What is the capital of France?" in French or at length; with them appended,
    5 of 5 (and 3 of 3 per question in a short check: capital, sky, spider) came back short and in English."""
    if not instructions or instructions.strip() == DEFAULT_INSTRUCTIONS:
        return with_language(DEFAULT_INSTRUCTIONS, language)
    return with_language(instructions.rstrip() + "\n\n" + DEFAULT_INSTRUCTIONS, language)


def closed(schema: dict | None) -> dict:
    """A tool's parameters as the grammar should hold the model to them: an object with only the declared
    properties (llama.cpp's converter otherwise admits any extra key, and a 135M model invents them:
    ``{"get_weather": {...}}``, ``{"2": "2"}``), unless the schema itself says what else is allowed."""
    schema = dict(schema or {"type": "object", "properties": {}})
    if schema.get("type") == "object" and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


def grounded(messages: list[dict], tool: dict, args: dict) -> bool:
    """A tool call that rests on what the user just said: each string argument's words are in the latest user
    message (a city named, a topic), or, for a tool that takes no strings, one of its name's distinctive words is.
    Only the latest: a "Thanks." after a weather answer must not call the weather tool again for the city named
    a turn before."""
    last = next((m.get("content") or "" for m in reversed(messages) if m["role"] == "user"), "")
    said = set(words_of(last))
    strings = [v for v in args.values() if isinstance(v, str) and v.strip()]
    if strings:
        return all(set(words_of(v)) <= said for v in strings)
    return bool((set(words_of(tool.get("name", "").replace("_", " "))) - GENERIC_WORDS) & said)


def recent(messages: list[dict], most: int = 16, step: int = 8) -> list[dict]:
    """The end of a long conversation, for a small model's short context: at most ``most`` messages, cut ``step`` at
    a time. A window that slid by one turn each turn ([-8:]) changed the prompt right after the instructions every
    turn, so the model's prompt cache held nothing but them and each turn re-read the whole history; this one moves
    once every ``step`` messages."""
    n = len(messages)
    if n <= most:
        return messages
    return messages[((n - most) // step + 1) * step:]


def as_plain_chat(messages: list[dict]) -> list[dict]:
    """Tool calls and results for a chat template that knows no tools (SmolLM2's): a result becomes an instruction
    to answer from it (a small model imitates anything shaped like a turn, so the call itself is left out)."""
    out, names = [], {}
    for m in messages:
        if m.get("tool_calls"):
            names.update({c["id"]: c["function"]["name"] for c in m["tool_calls"]})
        elif m["role"] == "tool":
            name = names.get(m.get("tool_call_id"), "the tool").replace("_", " ")
            out.append({"role": "user", "content": f"The {name} tool says: {spoken_value(m.get('content'))}. "
                                                   "Tell me that in one short sentence."})
        elif m.get("content"):
            out.append({"role": m["role"], "content": m["content"]})
    return out


def chat_tools(tools: list, tool_choice) -> dict:
    """Realtime tools and tool_choice in the chat-completions shape."""
    if not tools:
        return {}
    body = {"tools": [{"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters")
                                                           if k in t}} for t in tools]}
    if isinstance(tool_choice, dict):
        body["tool_choice"] = {"type": "function", "function": {"name": tool_choice.get("name")}}
    elif tool_choice in ("auto", "none", "required"):
        body["tool_choice"] = tool_choice
    return body
