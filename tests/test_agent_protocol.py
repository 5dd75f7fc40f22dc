"""The Realtime protocol core (``agent/conversation.py``) under every event sequence hypothesis can make: client
events valid and not, user turns with and without a speculation that fits, responses finishing, playback draining,
barge-ins, in any order, on fake time with no sockets. A fake shell carries out the core's actions the way
``realtime.RealtimeSession`` does (a cancelled live response reports its end; a held speculation just ends).

What must hold after every step: at most one live response, and it is one the shell is running; the speculation
is held, not live; response ids are never reused and only started responses are cancelled or committed; item ids
are unique and every ``previous_item_id`` named an item that existed; every event has a type and an id-free body
the shell stamps, every ``error`` has the one shape (``agent/events.py``); ``response.done`` and item events name
responses and items that exist.
"""

from __future__ import annotations

import itertools

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from voxgate.agent import conversation
from voxgate.agent.conversation import (CancelResponse, ClearInput, ClearOutput, CommitResponse, ConfigureAudio,
                                        Conversation, Emit, EndInput, SetResponding, StartResponse)
from voxgate.agent.turns import transcript_fits

ERROR_KEYS = {"type", "code", "message", "param", "event_id"}
WORDS = st.sampled_from(["hello", "what is the weather", "what is the weather like", "stop", "tell me a joke", ""])
_ids = itertools.count()


def new_id(prefix: str) -> str:
    """Ids in the order they are made (the core's own are random): hypothesis replays a sequence exactly."""
    return f"{prefix}_{next(_ids):06d}"


class Shell:
    """The shell's side of the protocol, as ``realtime.RealtimeSession`` carries it out, with the checks."""

    def __init__(self, core: Conversation):
        self.core = core
        self.running: dict[str, dict] = {}  # rid -> {"config", "live"}: the runners in progress
        self.started: set[str] = set()
        self.events: list[dict] = []
        self.responding = False

    def do(self, actions: list) -> None:
        for a in actions:
            t = type(a)
            if t is Emit:
                self.check_event(a.event)
                self.events.append(a.event)
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
                    self.do(self.core.response_done(a.rid, "cancelled", 0))
            elif t is EndInput:
                item = new_id("item")
                self.do(self.core.commit_user_item(item, "hello"))
                self.do(self.core.end_of_turn("hello", a.create_response, {}, transcript_fits))
            elif t is SetResponding:
                self.responding = a.on
            else:
                assert t in (ClearInput, ClearOutput, ConfigureAudio), a

    def check_event(self, event: dict) -> None:
        assert isinstance(event.get("type"), str) and "event_id" not in event, event  # the shell stamps ids
        if event["type"] == "error":
            assert set(event["error"]) == ERROR_KEYS, event
            assert event["error"]["type"] and event["error"]["code"] and event["error"]["message"], event
        if event["type"] in ("conversation.item.added", "conversation.item.done", "input_audio_buffer.committed"):
            prev = event.get("previous_item_id")
            assert prev is None or prev in self.item_ids_before(event), event

    def item_ids_before(self, event: dict) -> set:
        return {i["id"] for i in self.core.items} | {e["item"]["id"] for e in self.events if "item" in e}


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        global _ids
        _ids = itertools.count()
        self._new_id, conversation.new_id = conversation.new_id, new_id
        self.core = Conversation(instructions="Be brief.", model="m", asr="a", voice="alloy", vad="v",
                                 responder="r")
        self.shell = Shell(self.core)
        self.now = 0.0
        self.shell.do(self.core.start({"type": "realtime"}))

    def teardown(self):
        conversation.new_id = self._new_id

    def client(self, event: dict) -> None:
        self.now += 0.02
        self.shell.do(self.core.client_event(event, self.now))

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
                                "input_audio_buffer.append", "no.such.event", None]), open_=st.booleans())
    def buffer_event(self, kind, open_):
        self.core.input_open = open_
        self.client({"type": kind} if kind else {"no": "type"})
        self.core.input_open = False

    # ------------------------------------------------------------- what the shell reports
    @rule(said=WORDS, heard=WORDS, speculate=st.booleans(), create=st.booleans())
    def user_turn(self, said, heard, speculate, create):
        """A pause (maybe a reply prepared from what was said so far), then the turn's end with its transcript."""
        if speculate:
            self.shell.do(self.core.speculate(said))
        item = new_id("item")
        self.shell.do(self.core.commit_user_item(item, heard))
        self.shell.do(self.core.end_of_turn(heard, create, {"turn_end": self.now}, transcript_fits))

    @rule(said=WORDS)
    def speech_resumes(self, said):
        self.shell.do(self.core.speculate(said))
        self.shell.do(self.core.discard_speculation())

    @precondition(lambda self: any(r["live"] or not r["config"].in_conversation for r in self.shell.running.values()))
    @rule(data=st.data(), queued=st.sampled_from([0, 400]), status=st.sampled_from(["completed", "failed"]))
    def response_finishes(self, data, queued, status):
        ready = sorted(k for k, r in self.shell.running.items() if r["live"] or not r["config"].in_conversation)
        rid = data.draw(st.sampled_from(ready))
        config = self.shell.running[rid]["config"]
        item = {"id": new_id("item"), "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "completed", "content": [{"type": "output_audio", "transcript": "hi there"}]}
        self.shell.do(self.core.item_added(config, item))
        self.shell.do(self.core.item_done(config, item, 500))
        del self.shell.running[rid]
        self.shell.do(self.core.response_done(rid, status, queued))

    @precondition(lambda self: self.core.playing is not None)
    @rule()
    def playback_drains(self):
        self.shell.do(self.core.drained(self.core.playing))

    @rule()
    def barge_in(self):
        rid, actions = self.core.barge_in()
        assert rid is None or rid in self.shell.started
        self.shell.do(actions)

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
        if self.shell.responding:
            assert self.core.live is not None or self.core.playing is not None


ProtocolMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_realtime_protocol_core = ProtocolMachine.TestCase
