"""The Realtime protocol core (``agent/core/connection.py``, around ``conversation.py`` and ``turns.py``) under
every event sequence hypothesis can make: client events valid and not, speech and silence frame by frame (turns,
pauses with a speculation that fits or not, a better decode at the pause, speech over the agent, barge-ins),
responses finishing, playback draining, in any order, on fake time with no sockets. A fake shell carries out the
core's actions the way ``shell/realtime.RealtimeSession`` does (a cancelled live response reports its end; a held
speculation just ends; the recognizer answers with the words the test drew).

What must hold after every step: at most one live response, and it is one the shell is running; the speculation
is held, not live; response ids are never reused and only started responses are cancelled or committed; item ids
are unique and every ``previous_item_id`` named an item that existed; every event is typed and serialised without
an id (the shell stamps it), every ``error`` has the one shape (``agent/core/events.py``); transcription deltas
name the open input buffer; every user item is announced by ``input_audio_buffer.committed`` first.
"""

from __future__ import annotations

import itertools

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from voxgate.agent.core import events as ev
from voxgate.agent.core.connection import CountSpeculation, RealtimeConnection, WarmResponder
from voxgate.agent.core.conversation import (CancelResponse, ClearInput, ClearOutput, CommitResponse, ConfigureAudio,
                                             Emit, EndInput, StartResponse)
from voxgate.agent.core.turns import (EndOfTurn, Hold, IdleTimeout, Interrupt, JudgeInterruption, Release, Resume,
                                      Speculate, SpeechStarted)

ERROR_KEYS = {"type", "code", "message", "param", "event_id"}
WORDS = st.sampled_from(["hello", "what is the weather", "what is the weather like", "stop", "tell me a joke",
                         "mm-hm", "what is the", ""])


class Shell:
    """The shell's side of the protocol, as ``realtime.RealtimeSession`` carries it out, with the checks."""

    def __init__(self, conn: RealtimeConnection):
        self.conn, self.core = conn, conn.conv
        self.running: dict[str, dict] = {}  # rid -> {"config", "live"}: the runners in progress
        self.started: set[str] = set()
        self.events: list[dict] = []
        self.heard = "hello"  # what the recognizer hears (drawn by the test)
        self.now = 0.0

    def do(self, actions: list) -> None:
        for a in actions:
            t = type(a)
            if t is Emit:
                self.check_event(a.event)
            elif t is StartResponse:
                assert a.rid not in self.started, "a response id was reused"
                self.started.add(a.rid)
                self.running[a.rid] = {"config": a.config, "live": not a.speculative}
            elif t is CommitResponse:
                assert a.rid in self.running and not self.running[a.rid]["live"], "committed what is not held"
                self.running[a.rid]["live"] = True
            elif t is CancelResponse:
                assert a.rid in self.started, "cancelled a response never started"
                r = self.running.pop(a.rid, None)
                if r is not None and r["live"]:  # a live runner says it ended (response.done cancelled)
                    self.do(self.conn.response_done(a.rid, "cancelled", 0))
            elif t is EndInput:
                end = self.conn.t_ms
                self.conn.reset_turn()
                self.turn_ends(EndOfTurn(end, a.create_response))
            elif t is ClearInput:
                self.conn.clear_input()
            elif t is WarmResponder:  # only while the agent is silent, with what the turn's request begins with
                assert self.core.live is None and self.core.playing is None and a.messages == self.core.messages()
            else:
                assert t in (ClearOutput, ConfigureAudio, CountSpeculation), a

    def turn(self, action) -> None:
        """A turn action from the frame loop, carried out with the recognizer's words."""
        t = type(action)
        if t is SpeechStarted:
            self.do(self.conn.speech_started(action))
        elif t is Hold:
            self.conn.held()
            self.do(self.conn.transcribed(self.heard))
        elif t is JudgeInterruption:
            self.conn.interruption_judged(self.heard, 1.0, action.speech_ms)
        elif t is Release:
            self.conn.released(action.false_interruption)
        elif t is Interrupt:
            rid, actions = self.conn.barge_in()
            assert rid is None or rid in self.started
            if rid is not None:
                self.do(actions)
                self.do(self.conn.heard(rid, None, 0, 0))
        elif t is Speculate:
            self.do(self.conn.paused(self.heard, self.now, self.now))
        elif t is Resume:
            self.do(self.conn.resumed())
        elif t is EndOfTurn:
            self.turn_ends(action)
        elif t is IdleTimeout:
            self.do(self.conn.idle_timeout(action, self.now))
        else:
            raise AssertionError(action)

    def turn_ends(self, action: EndOfTurn) -> None:
        item_id, stopped = self.conn.speech_stopped(action)
        self.do(stopped)
        peeked = self.conn.take_peeked()
        self.do(self.conn.segment(peeked if peeked is not None else self.heard))
        self.do(self.conn.turn_committed(item_id, action.create_response, {"turn_end": self.now}))

    def check_event(self, event: ev.ServerEvent) -> None:
        assert isinstance(event, ev.ServerEvent) and event.type, event
        wire = event.as_dict()
        assert "event_id" not in wire, wire  # the shell stamps ids
        if wire["type"] == "error":
            assert set(wire["error"]) == ERROR_KEYS, wire
            assert wire["error"]["type"] and wire["error"]["code"] and wire["error"]["message"], wire
        if wire["type"] in ("conversation.item.added", "conversation.item.done", "input_audio_buffer.committed"):
            prev = wire.get("previous_item_id")
            assert prev is None or prev in self.item_ids_before(), wire
        if wire["type"] == "conversation.item.input_audio_transcription.delta":
            assert wire["item_id"] == self.conn.item, (wire, self.conn.item)
        if wire["type"] == "conversation.item.added" and wire["item"].get("role") == "user" \
                and wire["item"]["content"][0]["type"] == "input_audio":
            assert self.events[-1]["type"] == "input_audio_buffer.committed", self.events[-3:]
            assert self.events[-1]["item_id"] == wire["item"]["id"]
        self.events.append(wire)

    def item_ids_before(self) -> set:
        return {i["id"] for i in self.core.items} | {e["item"]["id"] for e in self.events if "item" in e}


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        ids = itertools.count()  # ids in the order they are made (the core's own are random): replays are exact
        self.conn = RealtimeConnection(instructions="Be brief.", model="m", asr="a", voice="alloy", vad="v",
                                       responder="r", ids=lambda prefix: f"{prefix}_{next(ids):06d}")
        self.core = self.conn.conv
        self.shell = Shell(self.conn)
        self.shell.do(self.conn.start({"type": "realtime"}))

    def client(self, event: dict) -> None:
        self.shell.now += 0.02
        self.shell.do(self.conn.client_event(event, self.shell.now))

    def some_item_id(self, data) -> str:
        ids = [i["id"] for i in self.core.items]
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
        rid = data.draw(st.sampled_from([None, "resp_missing", *sorted(self.shell.running)]))
        self.client({"type": "response.cancel", **({"response_id": rid} if rid else {})})

    @rule(kind=st.sampled_from(["input_audio_buffer.commit", "input_audio_buffer.clear", "output_audio_buffer.clear",
                                "input_audio_buffer.append", "no.such.event", None]))
    def buffer_event(self, kind):
        self.client({"type": kind} if kind else {"no": "type"})

    # ------------------------------------------------------------- audio, and what the recognizer hears
    @rule(speech=st.booleans(), frames=st.integers(1, 60), heard=WORDS)
    def audio(self, speech, frames, heard):
        """``frames`` 20 ms frames of speech or silence; the recognizer hears ``heard`` in what is said."""
        self.shell.heard = heard
        for _ in range(frames):
            self.shell.now += 0.02
            for action in self.conn.frame(1.0 if speech else 0.0, 3000.0 if speech else 10.0):
                self.shell.turn(action)

    @rule(text=WORDS)
    def partial_hypothesis(self, text):
        self.shell.do(self.conn.transcribed(text))

    @precondition(lambda self: self.conn.peeked is not None)
    @rule(better=WORDS)
    def better_decode(self, better):
        """The beam's decode of the audio the pause's draft came from."""
        self.shell.do(self.conn.refined(self.conn.peeked, better, self.shell.now, self.shell.now))

    # ------------------------------------------------------------- what response runners report
    @precondition(lambda self: any(r["live"] or not r["config"].in_conversation for r in self.shell.running.values()))
    @rule(data=st.data(), queued=st.sampled_from([0, 400]), status=st.sampled_from(["completed", "failed"]))
    def response_finishes(self, data, queued, status):
        ready = sorted(k for k, r in self.shell.running.items() if r["live"] or not r["config"].in_conversation)
        rid = data.draw(st.sampled_from(ready))
        config = self.shell.running[rid]["config"]
        item = {"id": self.core.new_id("item"), "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "completed", "content": [{"type": "output_audio", "transcript": "hi there"}]}
        self.shell.do(self.conn.item_added(config, item))
        self.shell.do(self.conn.item_done(config, item, 500))
        del self.shell.running[rid]
        self.shell.do(self.conn.response_done(rid, status, queued))

    @precondition(lambda self: self.core.playing is not None)
    @rule()
    def playback_drains(self):
        self.shell.do(self.conn.drained(self.core.playing))

    @rule()
    def barge_in(self):
        self.shell.turn(Interrupt())

    # ------------------------------------------------------------- what must hold
    @invariant()
    def one_live_response_the_shell_runs(self):
        live = [k for k, r in self.shell.running.items() if r["live"] and r["config"].in_conversation]
        assert len(live) <= 1, live
        assert self.core.live is None or (self.core.live in self.shell.running
                                          and self.shell.running[self.core.live]["live"])
        assert live == ([self.core.live] if self.core.live else []), (live, self.core.live)

    @invariant()
    def the_speculation_is_held(self):
        spec = self.core.spec
        assert spec is None or (spec in self.shell.running and not self.shell.running[spec]["live"])
        assert spec is None or spec != self.core.live

    @invariant()
    def items_are_unique(self):
        ids = [i["id"] for i in self.core.items]
        assert len(ids) == len(set(ids)), ids

    @invariant()
    def barge_in_is_armed_only_while_the_agent_speaks(self):
        if self.conn.tt.responding:
            assert self.core.live is not None or self.core.playing is not None


ProtocolMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_realtime_protocol_core = ProtocolMachine.TestCase
