"""GPT-Live's delegation on the engine (sans-IO): which of the caller's turns the voice hands to a backend, what it
says meanwhile, and the backend's work in the API's shapes (``response.event``, ``decision.event``).

GPT-Live pairs a fast voice with a backend that reasons. voxgate's voice is the engine (turns, barge-in, the small
model, the synthesizer); the backend is a responder (``--delegate``: a Responses or chat-completions model by URL,
or the embedded model by default) run by the executor (``StartBackend``), or the app itself (``client``).

**Which turns are delegated** (``voice_keeps``): the voice answers what needs no knowledge and no action —
greetings, thanks, farewells, backchannels, "can you hear me", "wait" — in its own words, at once; every other turn
(a question, a request, a statement the backend must see) goes to the backend. A small voice model that tried to
answer questions itself would answer them wrongly and fast, which a voice product cannot take back; the rule errs
towards the backend, whose answer the voice speaks. Measured in ``bench/live_delegation.py``.

**What the voice says meanwhile**: an acknowledgement (``ACKS``, a few words, spoken verbatim: the synthesizer
alone, no model) ``acknowledgement_delay_ms`` after the delegation (0 for client and responses, 400 for
decisions, as GPT-Live), unless the answer (a backend's text, an app's ``commentary``) came first: any append
for the delegation cancels the pending acknowledgement, as GPT-Live's does.

**An app that does not answer**: a ``client`` delegation that gets no ``thinking`` or ``commentary`` within
``CLIENT_WAIT_S`` is answered by the voice from what it knows, as a person would rather than leave the caller in
silence (an app that is working on it says so with ``thinking``, which holds the voice). An app written for
GPT-Live answers within that; one that ignores delegation still gets a conversation.

**The backend's answer** is spoken as it was written: the backend is told it answers for speech, in a sentence or
two. (The voice rephrasing it, as GPT-Live's does, would put a 135 M-parameter model between a good answer and the
caller; verbatim is what keeps the answer right.)

**Decisions**: each question (``choice``, ``predicate``, ``score``) is asked of the backend in one request, one
numbered line per answer (``decision_prompt``), and read back by ``read_answers``: a choice the line names, yes or
no, a level's label. A line that names none is a ``refusal`` for that question, as the Decision API says. The
backend gives no token probabilities, so the answer it named has ``confidence`` 1.0 (a predicate: probability 1.0
or 0.0).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from . import eou

ACKS = ("One moment.", "Let me check.", "Sure, one second.", "Let me look into that.")
DEFAULT_ACK_DELAY_MS = {"client": 0, "responses": 0, "decisions": 400}
CLIENT_WAIT_S = 2.5  # a client delegation the app adds nothing to for this long: the voice answers it itself
BACKEND_INSTRUCTIONS = ("You are the backend of a voice assistant: your answer is spoken to the caller as you write "
                        "it. Answer the caller's last request in one or two short spoken sentences, with no lists, "
                        "markup or symbols. Use a tool when one fits the request.")
FAILED_SAY = "Sorry, I could not get that done. Could you try again?"

_KEEP = re.compile(r"^(?:(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening))(?: there)?"
                   r"|thanks?(?: you)?(?: so much)?"
                   r"|thank you(?: very much)?|bye|goodbye|bye bye|see you|talk (?:to you )?later|cheers|ok(?:ay)?"
                   r"|great|perfect|cool|nice|got it|sounds good|can you hear me|are you there|hello are you there"
                   r"|wait|hold on|one (?:second|moment)|never mind|nevermind|no thanks|that's all|that is all"
                   r"|how are you(?: doing)?(?: today)?|what's up|who are you|what is your name|what's your name)$")


def voice_keeps(transcript: str) -> bool:
    """Does the voice answer this turn itself (small talk, a backchannel), or does it go to the backend?"""
    words = re.findall(r"[a-z']+", transcript.lower())
    if not words:
        return True
    text = " ".join(words)
    return bool(_KEEP.match(text)) or eou.is_backchannel(transcript)


def ack_for(n: int) -> str:
    """The ``n``-th acknowledgement of a session: they vary, so a caller does not hear the same words every time."""
    return ACKS[n % len(ACKS)]


# ---------------------------------------------------------------- actions for the executor
@dataclass(frozen=True)
class StartBackend:
    """Run the backend (a responder) on ``messages``; report what it makes with ``Engine.backend(key, …)``."""

    key: str
    messages: list
    instructions: str
    tools: list = field(default_factory=list)
    tool_choice: object = "auto"
    max_tokens: int | None = None


@dataclass(frozen=True)
class StopBackend:
    key: str


# ---------------------------------------------------------------- a delegation's state
@dataclass
class Delegation:
    id: str
    target: str  # client, responses or decisions
    offset_ms: int
    ack_due: float | None = None  # when the acknowledgement is to be spoken (None: said, or not wanted)
    answer_due: float | None = None  # client: when the voice answers it itself, if the app has added nothing
    response_id: str | None = None  # responses: the backend's response
    stream: "ResponsesStream | None" = None
    extra: list = field(default_factory=list)  # responses: function calls and their outputs so far (chat messages)
    calls: dict = field(default_factory=dict)  # call_id -> (name, arguments) awaiting an output
    outputs: dict = field(default_factory=dict)  # call_id -> output
    text: str = ""  # decisions: what the backend answered so far
    parts: int = 0  # pieces of text the backend streamed (its output tokens, near enough)
    prompt_chars: int = 0
    trigger_id: str | None = None  # a trigger's decision
    source: tuple | None = None  # (event_id, event_type) a trigger fired on


# ---------------------------------------------------------------- the Responses API's stream, made once
class ResponsesStream:
    """The Responses API's streaming events for one backend response (``response.created`` … ``response.completed``),
    made from what the backend says: its text as ``response.output_text.delta`` in a message item, each tool call as
    a ``function_call`` item. Lifecycle snapshots are trimmed as GPT-Live's are (no input, instructions or tools)."""

    def __init__(self, response_id: str, model: str, new_id):
        self.id, self.model, self.new_id = response_id, model, new_id
        self.seq = 0
        self.items: list[dict] = []
        self.message: dict | None = None
        self.text = ""

    def _ev(self, type_: str, **fields) -> dict:
        out = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        return out

    def _snapshot(self, status: str) -> dict:
        return {"id": self.id, "object": "response", "status": status, "model": self.model, "output": []}

    def created(self) -> list[dict]:
        return [self._ev("response.created", response=self._snapshot("in_progress")),
                self._ev("response.in_progress", response=self._snapshot("in_progress"))]

    def said(self, delta: str) -> list[dict]:
        out = []
        if self.message is None:
            self.message = {"id": self.new_id("msg"), "type": "message", "role": "assistant", "status": "in_progress",
                            "content": []}
            self.items.append(self.message)
            idx = len(self.items) - 1
            out += [self._ev("response.output_item.added", output_index=idx, item=dict(self.message)),
                    self._ev("response.content_part.added", item_id=self.message["id"], output_index=idx,
                             content_index=0, part={"type": "output_text", "text": "", "annotations": []})]
        self.text += delta
        return out + [self._ev("response.output_text.delta", item_id=self.message["id"],
                               output_index=self.items.index(self.message), content_index=0, delta=delta)]

    def called(self, name: str, call_id: str, arguments: str) -> list[dict]:
        out = self._close_message()
        item = {"id": self.new_id("fc"), "type": "function_call", "status": "completed", "call_id": call_id,
                "name": name, "arguments": arguments}
        self.items.append(item)
        idx = len(self.items) - 1
        return out + [self._ev("response.output_item.added", output_index=idx, item={**item, "status": "in_progress",
                                                                                     "arguments": ""}),
                      self._ev("response.function_call_arguments.done", item_id=item["id"], output_index=idx,
                               arguments=arguments),
                      self._ev("response.output_item.done", output_index=idx, item=item)]

    def _close_message(self) -> list[dict]:
        m = self.message
        if m is None:
            return []
        self.message = None
        idx = self.items.index(m)
        part = {"type": "output_text", "text": self.text, "annotations": []}
        m.update(status="completed", content=[part])
        return [self._ev("response.output_text.done", item_id=m["id"], output_index=idx, content_index=0,
                         text=self.text),
                self._ev("response.content_part.done", item_id=m["id"], output_index=idx, content_index=0, part=part),
                self._ev("response.output_item.done", output_index=idx, item=dict(m))]

    def ended(self, status: str = "completed", error: str | None = None) -> list[dict]:
        out = self._close_message()
        if status == "failed":
            snap = {**self._snapshot("failed"), "error": {"code": "server_error", "message": error or "failed"}}
            return out + [self._ev("response.failed", response=snap)]
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(status,
                                                                                             "response.completed")
        return out + [self._ev(kind, response=self._snapshot(status))]


# ---------------------------------------------------------------- Responses backend settings
HOSTED_TOOLS = ("web_search", "web_search_preview", "file_search", "code_interpreter", "shell", "mcp",
                "image_generation", "computer", "computer_use_preview", "custom", "apply_patch", "local_shell",
                "tool_search", "namespace", "programmatic_tool_calling")


def function_tools(tools: list) -> list:
    """The Responses tools as the responder takes them (Realtime-shaped function tools: name, description,
    parameters)."""
    return [{"type": "function", "name": t["name"], "description": t.get("description") or "",
             "parameters": t.get("parameters") or {"type": "object", "properties": {}}} for t in tools]


def output_text(output) -> str:
    """A ``function_call_output``'s output (a string, or text parts) as text."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return " ".join(p.get("text", "") for p in output if isinstance(p, dict))
    return json.dumps(output)


# ---------------------------------------------------------------- decisions
def _text_of(instructions) -> str:
    if isinstance(instructions, str):
        return instructions
    parts = []
    for p in instructions or []:
        if isinstance(p, dict):
            if p.get("type") == "input_json":
                parts.append(json.dumps(p.get("json")))
            elif isinstance(p.get("text"), str):
                parts.append(p["text"])
    return " ".join(parts)


def decision_prompt(questions: list, transcript: str) -> str:
    """One request for every question: numbered, with the answers each may take."""
    lines = ["Read the conversation, then answer each question on its own line as '<number>: <answer>'.",
             "", "Conversation:", transcript or "(nothing said yet)", "", "Questions:"]
    for i, q in enumerate(questions, 1):
        text = _text_of(q.get("instructions"))
        if q["type"] == "choice":
            options = ", ".join(json.dumps(c["value"]) if isinstance(c["value"], bool) else str(c["value"])
                                for c in q["choices"])
            lines.append(f"{i}. {text} Answer with one of: {options}.")
        elif q["type"] == "predicate":
            lines.append(f"{i}. {text} Answer yes or no.")
        else:
            labels = ", ".join(level["label"] for level in q["levels"])
            lines.append(f"{i}. {text} Answer with one of these levels: {labels}.")
    return "\n".join(lines)


def read_answers(questions: list, text: str) -> list[dict]:
    """The backend's lines as the Decision API's answers, in the questions' order."""
    lines: dict[int, str] = {}
    for line in text.splitlines():
        m = re.match(r"\s*(?:question\s*)?(\d+)\s*[:.)-]\s*(.*)", line, re.I)
        if m and int(m.group(1)) not in lines:
            lines[int(m.group(1))] = m.group(2).strip().lower()
    if not lines and len(questions) == 1:
        lines[1] = text.strip().lower()
    return [_answer(q, lines.get(i)) for i, q in enumerate(questions, 1)]


def _answer(q: dict, line: str | None) -> dict:
    base = {"name": q.get("name")}
    refusal = {"type": "refusal", **base}
    if not line:
        return refusal
    words = re.findall(r"[a-z0-9']+", line)
    if q["type"] == "predicate":
        yes = bool(words) and words[0] in ("yes", "true", "correct", "yeah")
        no = bool(words) and words[0] in ("no", "false", "incorrect", "not")
        if not (yes or no):
            return refusal
        return {"type": "predicate", "probability": 1.0 if yes else 0.0, **base}
    if q["type"] == "choice":
        values = [c["value"] for c in q["choices"]]
        picked = _named(line, [json.dumps(v) if isinstance(v, bool) else str(v) for v in values])
        if picked is None:
            return refusal
        return {"type": "choice", "choice": values[picked], "confidence": 1.0,
                "probabilities": [{"value": v, "probability": 1.0 if i == picked else 0.0}
                                  for i, v in enumerate(values)], **base}
    labels = [level["label"] for level in q["levels"]]
    picked = _named(line, labels)
    if picked is None:
        return refusal
    return {"type": "score", "score": float(picked), "confidence": 1.0,
            "probabilities": [{"label": lab, "value": i, "probability": 1.0 if i == picked else 0.0}
                              for i, lab in enumerate(labels)], **base}


def _named(line: str, options: list[str]) -> int | None:
    """Which option the line names (the longest that appears as whole words, first in the line on a tie)."""
    found = []
    for i, opt in enumerate(options):
        m = re.search(r"(?<![a-z0-9])" + re.escape(opt.lower()) + r"(?![a-z0-9])", line)
        if m:
            found.append((-len(opt), m.start(), i))
    best = min(found)[2] if found else None
    return best


def check_questions(questions, param: str) -> str | None:
    """What is wrong with a list of decision questions, or None."""
    if not isinstance(questions, list) or not 1 <= len(questions) <= 400:
        return f"'{param}' is a list of 1 to 400 questions"
    for i, q in enumerate(questions):
        p = f"{param}[{i}]"
        if not isinstance(q, dict) or q.get("type") not in ("choice", "predicate", "score"):
            return f"'{p}.type' is choice, predicate or score"
        unknown = set(q) - {"type", "instructions", "name", "choices", "levels"}
        if unknown:
            return f"Unknown parameter: '{p}.{sorted(unknown)[0]}'."
        if not isinstance(q.get("instructions"), (str, list)) or not _text_of(q["instructions"]).strip():
            return f"'{p}.instructions' is required"
        if q["type"] == "choice":
            cs = q.get("choices")
            if not isinstance(cs, list) or not 2 <= len(cs) <= 255 or not all(
                    isinstance(c, dict) and isinstance(c.get("value"), (str, bool)) for c in cs):
                return f"'{p}.choices' is 2 to 255 choices, each {{\"value\": string or boolean}}"
            vals = [(type(c["value"]), c["value"]) for c in cs]
            if len(set(vals)) != len(vals):
                return f"'{p}.choices' must be unique"
        elif q["type"] == "score":
            ls = q.get("levels")
            if not isinstance(ls, list) or not 2 <= len(ls) <= 255 or not all(
                    isinstance(x, dict) and isinstance(x.get("label"), str) for x in ls):
                return f"'{p}.levels' is a list of levels, each {{\"label\": …}}"
    return None


def usage(prompt_chars: int, parts: int) -> dict:
    """A backend request's usage in the Decision API's shape. A responder does not count tokens: the prompt's are
    estimated at four characters each, the answer's as the pieces it streamed."""
    inp = max(1, prompt_chars // 4)
    return {"input_tokens": inp, "input_tokens_details": {"cache_write_tokens": 0, "cached_tokens": 0},
            "output_tokens": parts, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": inp + parts}


def transcript_of(messages: list[dict]) -> str:
    """Chat messages as a transcript a backend reads ("User: …" / "Assistant: …"); acknowledgements left out."""
    lines = []
    for m in messages:
        text = m.get("content")
        if not isinstance(text, str) or not text.strip() or (m["role"] == "assistant" and text in ACKS):
            continue
        who = {"user": "User", "assistant": "Assistant"}.get(m["role"])
        if who:
            lines.append(f"{who}: {text.strip()}")
    return "\n".join(lines)
