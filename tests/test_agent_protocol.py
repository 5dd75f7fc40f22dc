"""The conversation engine (``agent/core/engine.py``, around ``conversation.py``, ``reply.py`` and ``turns.py``) under
every sequence hypothesis can make: client events valid and not, speech and silence frame by frame (turns, pauses
with a speculation that fits or not, a better decode at the pause, speech over the agent, barge-ins), the
recognizer answering (in order, late), runners saying, speaking, calling tools, ending and failing, first packets
leaving, playback draining, time passing, on fake time with no sockets. The executors here only answer what the
engine asks (a recognizer that hears the words the test drew, runners that report, an output queue); they decide
nothing, so what is checked is the engine itself.

What must hold after every step: at most one live response, and its runner is running; the speculation is held,
not live, and none of its audio is written; response ids are never reused and only started runners are made live
or stopped; every ``response.created`` is followed by at most one ``response.done`` for it; item ids are unique and
every ``previous_item_id`` named an item that existed; every event is typed and serialised without an id (the
executor stamps it), every ``error`` has the one shape (``agent/core/events.py``); transcription deltas name the
open input buffer; every user item is announced by ``input_audio_buffer.committed`` first; the input is gated only
while a turn's final decode is awaited.
"""

from __future__ import annotations

import collections
import itertools

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from voxgate.agent.core import engine as en, events as ev
from voxgate.agent.core.conversation import ClearOutput, ConfigureAudio, ConfigureDenoise, ConfigureRecognizer, Emit
from voxgate.agent.core.reply import Called, Ended, Failed, Said, Spoke

ERROR_KEYS = {"type", "code", "message", "param", "event_id"}
WORDS = st.sampled_from(["hello", "what is the weather", "what is the weather like", "stop", "tell me a joke",
                         "mm-hm", "what is the", ""])


class Executors:
    """What the engine asks for, answered the way the shell's executors would, and checked."""

    def __init__(self, engine: en.Engine):
        self.engine, self.conv = engine, engine.conv
        self.running: dict[str, dict] = {}  # rid -> {"config", "live"}: the runners in progress
        self.started: set[str] = set()
        self.asked: collections.deque = collections.deque()  # recognizer requests not yet answered, in order
        self.queued_ms = 0.0  # audio written and not yet played out
        self.sent_watch: set[str] = set()
        self.drain_watch: set[str] = set()
        self.gated = False
        self.created: set[str] = set()
        self.done: set[str] = set()
        self.events: list[dict] = []
        self.heard = "hello"  # what the recognizer hears (drawn by the test)
        self.now = 0.0

    def do(self, actions: list) -> None:
        for a in actions:
            t = type(a)
            if t is Emit:
                self.check_event(a.event)
            elif t is en.AsrDecode:
                self.asked.append(a)
            elif t is en.StartRunner:
                assert a.rid not in self.started, "a response id was reused"
                self.started.add(a.rid)
                self.running[a.rid] = {"config": a.config, "live": a.live}
            elif t is en.GoLive:  # a held runner goes live; one that has ended already has nothing left to do
                assert a.rid in self.started, "made live a runner never started"
                if a.rid in self.running:
                    assert not self.running[a.rid]["live"], "made live what is not held"
                    self.running[a.rid]["live"] = True
            elif t is en.StopRunner:
                assert a.rid in self.started, "stopped a runner never started"
                self.running.pop(a.rid, None)
            elif t is en.WriteAudio:
                rid = a.ids["response_id"]
                assert rid not in self.running or self.running[rid]["live"], "a speculation's audio was written"
                self.queued_ms += len(a.pcm) / 48
            elif t is ClearOutput:
                dropped, self.queued_ms = self.queued_ms, 0.0
                self.do(self.engine.output_cleared(a.why, dropped, self.now))
            elif t is en.WatchSent:
                self.sent_watch.add(a.rid)
            elif t is en.WatchDrained:
                self.drain_watch.add(a.rid)
            elif t is en.GateInput:
                self.gated = not a.open
            elif t is en.WarmResponder:  # only while the agent is silent, with what the turn's request begins with
                assert self.conv.live is None and self.conv.playing is None and a.messages == self.conv.messages()
            else:
                assert t in (en.AsrStart, en.AsrFeed, en.AsrCancel, en.FlushAudio, en.PauseOutput, en.Count,
                             en.Observe, ConfigureAudio, ConfigureRecognizer, ConfigureDenoise), a

    def answer(self, better: str) -> None:
        """The recognizer answers its oldest request with what it heard (a beam's refinement: ``better``)."""
        a = self.asked.popleft()
        result = {"draft": (self.heard, 0.3, "refine") if better != self.heard else (self.heard, 0.9, None),
                  "refine": better, "scored": (self.heard, 1.0), "finish": self.heard}[a.kind]
        self.do(self.engine.recognized(a.req, result, self.now))

    def check_event(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ServerEvent) and event.type, event
        wire = event.as_dict()
        assert "event_id" not in wire, wire  # the executor stamps ids
        if wire["type"] == "error":
            assert set(wire["error"]) == ERROR_KEYS, wire
            assert wire["error"]["type"] and wire["error"]["code"] and wire["error"]["message"], wire
        if wire["type"] in ("conversation.item.added", "conversation.item.done", "input_audio_buffer.committed"):
            prev = wire.get("previous_item_id")
            assert prev is None or prev in self.item_ids_before(), wire
        if wire["type"] == "conversation.item.input_audio_transcription.delta":
            assert wire["item_id"] == self.engine.item, (wire, self.engine.item)
        if wire["type"] == "conversation.item.added" and wire["item"].get("role") == "user" \
                and wire["item"]["content"][0]["type"] == "input_audio":
            assert self.events[-1]["type"] == "input_audio_buffer.committed", self.events[-3:]
            assert self.events[-1]["item_id"] == wire["item"]["id"]
        if wire["type"] == "response.created":
            assert wire["response"]["id"] not in self.created
            self.created.add(wire["response"]["id"])
        if wire["type"] == "response.done":
            rid = wire["response"]["id"]
            assert rid in self.created and rid not in self.done, rid
            self.done.add(rid)
        self.events.append(wire)

    def item_ids_before(self) -> set:
        return {i["id"] for i in self.conv.items} | {e["item"]["id"] for e in self.events if "item" in e}


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        ids = itertools.count()  # ids in the order they are made (the engine's own are random): replays are exact
        self.engine = en.Engine(instructions="Be brief.", model="m", asr="a", voice="alloy", vad="v", responder="r",
                                ids=lambda prefix: f"{prefix}_{next(ids):06d}")
        self.conv = self.engine.conv
        self.x = Executors(self.engine)
        self.x.do(self.engine.start({"type": "realtime"}, en.Hearing(partials=True, peeks=True)))

    def client(self, event: dict) -> None:
        self.x.now += 0.02
        self.x.do(self.engine.client_event(event, self.x.now))

    def some_item_id(self, data) -> str:
        ids = [i["id"] for i in self.conv.items]
        return data.draw(st.sampled_from(ids + ["item_missing"])) if ids else "item_missing"

    # ------------------------------------------------------------- client events
    @rule(td=st.sampled_from([None, {"type": "server_vad"}, {"type": "semantic_vad", "eagerness": "high"},
                              {"type": "server_vad", "silence_duration_ms": -5}, {"type": "bogus"}]),
          instructions=st.sampled_from([None, "Talk like a pirate.", 7]))
    def session_update(self, td, instructions):
        session = {"type": "realtime", "audio": {"input": {"turn_detection": td}}}
        if instructions is not None:
            session["instructions"] = instructions
        self.client({"type": "session.update", "session": session, "event_id": "c1"})

    @rule(data=st.data(), text=WORDS, role=st.sampled_from(["user", "system", "nobody"]))
    def item_create(self, data, text, role):
        prev = data.draw(st.sampled_from([None, "root", self.some_item_id(data)]))
        item = {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}
        self.client({"type": "conversation.item.create", "item": item, "previous_item_id": prev})

    @rule(data=st.data())
    def item_delete(self, data):
        self.client({"type": "conversation.item.delete", "item_id": self.some_item_id(data)})

    @rule(data=st.data())
    def item_retrieve(self, data):
        self.client({"type": "conversation.item.retrieve", "item_id": self.some_item_id(data)})

    @rule(data=st.data(), ms=st.integers(-10, 2000))
    def item_truncate(self, data, ms):
        self.client({"type": "conversation.item.truncate", "item_id": self.some_item_id(data), "content_index": 0,
                     "audio_end_ms": ms})

    @rule(conversation=st.sampled_from([None, "auto", "none"]), modalities=st.sampled_from([None, ["text"], ["x"]]))
    def response_create(self, conversation, modalities):
        response = {}
        if conversation:
            response["conversation"] = conversation
        if modalities:
            response["output_modalities"] = modalities
        self.client({"type": "response.create", "response": response})

    @rule(data=st.data())
    def response_cancel(self, data):
        rid = data.draw(st.sampled_from([None, "resp_missing", *sorted(self.x.running)]))
        self.client({"type": "response.cancel", **({"response_id": rid} if rid else {})})

    @rule(kind=st.sampled_from(["input_audio_buffer.commit", "input_audio_buffer.clear", "output_audio_buffer.clear",
                                "input_audio_buffer.append", "no.such.event", None]))
    def buffer_event(self, kind):
        self.client({"type": kind} if kind else {"no": "type"})

    # ------------------------------------------------------------- audio, and what the recognizer hears
    @precondition(lambda self: not self.x.gated)
    @rule(speech=st.booleans(), frames=st.integers(1, 60), heard=WORDS)
    def audio(self, speech, frames, heard):
        """``frames`` 20 ms frames of speech or silence (until the engine gates the input); the recognizer hears
        ``heard`` in what is said."""
        self.x.heard = heard
        loud = (b"\x00\x40" if speech else b"\x01\x00") * 320
        for _ in range(frames):
            if self.x.gated:
                break
            self.x.now += 0.02
            self.x.do(self.engine.frame(loud, 1.0 if speech else 0.0, self.x.now))

    @rule(text=WORDS)
    def partial_hypothesis(self, text):
        self.x.do(self.engine.heard(text, self.x.now))

    @precondition(lambda self: self.x.asked)
    @rule(better=WORDS)
    def recognizer_answers(self, better):
        self.x.now += 0.05
        self.x.answer(better)

    @precondition(lambda self: self.x.asked)
    @rule()
    def recognizer_fails(self):
        a = self.x.asked.popleft()
        self.x.do(self.engine.recognized(a.req, None, self.x.now, error="RuntimeError: boom"))

    # ------------------------------------------------------------- what response runners report
    def some_runner(self, data):
        return data.draw(st.sampled_from(sorted(self.x.running)))

    @precondition(lambda self: self.x.running)
    @rule(data=st.data(), text=WORDS, audio=st.booleans())
    def runner_says(self, data, text, audio):
        rid = self.some_runner(data)
        if text:
            self.x.do(self.engine.report(rid, Said(text + " "), self.x.now))
        if audio:
            self.x.do(self.engine.report(rid, Spoke(b"\0" * 4800), self.x.now))

    @precondition(lambda self: self.x.running)
    @rule(data=st.data())
    def runner_calls_a_tool(self, data):
        self.x.do(self.engine.report(self.some_runner(data), Called("lookup", "call_1", '{"q": 1}'), self.x.now))

    @precondition(lambda self: self.x.running)
    @rule(data=st.data(), how=st.sampled_from(["completed", "incomplete", "failed"]))
    def runner_ends(self, data, how):
        end = Failed("boom") if how == "failed" else Ended(how, None if how == "completed" else "max_output_tokens")
        self.x.do(self.engine.report(self.some_runner(data), end, self.x.now))

    @precondition(lambda self: self.x.sent_watch)
    @rule(data=st.data())
    def first_packet_leaves(self, data):
        rid = data.draw(st.sampled_from(sorted(self.x.sent_watch)))
        self.x.sent_watch.discard(rid)
        self.x.do(self.engine.first_sent(rid, self.x.now, self.x.now))

    @precondition(lambda self: self.x.drain_watch)
    @rule()
    def playback_drains(self):
        self.x.queued_ms = 0.0
        for rid in sorted(self.x.drain_watch):
            self.x.do(self.engine.drained(rid, self.x.now))
        self.x.drain_watch.clear()

    @rule(seconds=st.sampled_from([0.05, 0.5]))
    def time_passes(self, seconds):
        self.x.now += seconds
        due = self.engine.next_deadline()
        if due is not None and due <= self.x.now:
            self.x.do(self.engine.timer(self.x.now))

    # ------------------------------------------------------------- what must hold
    @invariant()
    def one_live_response_its_runner_runs(self):
        live = [k for k, r in self.x.running.items() if r["live"] and r["config"].in_conversation]
        assert len(live) <= 1, live
        assert self.conv.live is None or (self.conv.live in self.x.running and self.x.running[self.conv.live]["live"])
        assert live == ([self.conv.live] if self.conv.live else []), (live, self.conv.live)

    @invariant()
    def the_speculation_is_held(self):
        spec = self.conv.spec  # its runner is held, or has ended (what it made is held)
        assert spec is None or spec in self.x.started and not self.x.running.get(spec, {"live": False})["live"]
        assert spec is None or spec != self.conv.live

    @invariant()
    def items_are_unique(self):
        ids = [i["id"] for i in self.conv.items]
        assert len(ids) == len(set(ids)), ids

    @invariant()
    def barge_in_is_armed_only_while_the_agent_speaks(self):
        if self.engine.tt.responding:
            assert self.conv.live is not None or self.conv.playing is not None

    @invariant()
    def the_input_is_gated_only_while_a_turn_is_decoded(self):
        assert self.x.gated == (self.engine.ending is not None)
        if self.x.gated:  # what it waits for is a request the recognizer has been asked
            assert self.x.asked


ProtocolMachine.TestCase.settings = settings(max_examples=500, stateful_step_count=50, deadline=None)
test_conversation_engine = ProtocolMachine.TestCase
