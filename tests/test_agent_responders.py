"""Responders: the scripted one, an OpenAI-compatible endpoint (a local server speaking the chat-completions
streaming format), and the embedded SmolLM2 when llama-cpp-python is installed."""

import asyncio
import contextlib
import json

import pytest
from aiohttp import web

from voxgate.agent.shell.llm_by_url import OpenAIChatResponder
from voxgate.agent.shell.responders import ScriptedResponder


@contextlib.asynccontextmanager
async def chat_server(completions):
    """A local server speaking the chat-completions streaming format; yields its base URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
    finally:
        await runner.cleanup()


async def collect(responder, text):
    return "".join([d async for d in responder.stream([{"role": "user", "content": text}], "Be brief.")])


def test_scripted_is_deterministic():
    r = ScriptedResponder()
    a = asyncio.run(collect(r, "what is the weather like today"))
    assert a == asyncio.run(collect(r, "what is the weather like today"))
    assert "weather" in a and asyncio.run(collect(r, "hello there")).startswith("Hello")


def test_openai_compatible_endpoint_streams(unused_port=None):
    seen = {}

    async def completions(request):
        seen["body"] = await request.json()
        seen["auth"] = request.headers.get("Authorization")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ["It is", " sunny", " today."]:
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def run():
        async with chat_server(completions) as url:
            return await collect(OpenAIChatResponder(url, "test-model", api_key="sk-x"), "weather?")

    assert asyncio.run(run()) == "It is sunny today."
    assert seen["body"]["stream"] is True and seen["body"]["model"] == "test-model"
    assert seen["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen["auth"] == "Bearer sk-x"


def test_smollm2_answers():
    pytest.importorskip("xllamacpp")
    from voxgate.agent.shell.embedded import LlamaResponder

    text = asyncio.run(collect(LlamaResponder(max_tokens=20), "What color is the sky?"))
    assert len(text.split()) >= 3


def test_the_embedded_model_answers_in_english_whatever_the_app_says():
    """With an app's own instructions (the commonest, "You are a helpful assistant.") the 135M model answered
    "What is the capital of France?" in French one time in five; the spoken rules follow the app's instructions,
    and a reply that starts in another language is made again, greedy, before a word of it is spoken."""
    pytest.importorskip("xllamacpp")
    from voxgate.agent.shell.embedded import LlamaResponder
    from voxgate.agent.core.chat import english, foreign

    from voxgate.agent.core.chat import unfit

    assert foreign("Le Grand Paris, le") and foreign("L'Étoile de la") and foreign("C'est la France")
    assert [unfit(h) for h in ("Le Grand Paris,", "1. Paris is", "- Paris, the", "It is 1.1.0.2018", "<|im_start|> assistant",
                               "[Paris] is the", "the the the", "... ,, ;", "Paris is the")] == [
        "foreign", "list", "list", "digits", "markup", "markup", "nonsense", "nonsense", None]
    assert unfit("La capitale est", asked_english=False) is None  # a French question may be answered in French
    assert not foreign("The capital of") and not foreign("Paris is the")
    assert english("What is the capital of France?") and not english("Quelle est la capitale de la France ?")
    r = LlamaResponder()

    async def ask():
        return "".join([p async for p in r.stream([{"role": "user", "content": "What is the capital of France?"}],
                                                  "You are a helpful assistant.")])

    answers = [asyncio.run(ask()) for _ in range(12)]
    assert all("paris" in a.lower() and not foreign(a) for a in answers), answers

    async def unprompted():  # response.create before anything was said: no question to check the reply against
        return "".join([p async for p in r.stream([], "You are a helpful assistant.")])

    assert isinstance(asyncio.run(unprompted()), str)


WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}


async def parts(responder, messages, **kw):
    return [p async for p in responder.stream(messages, "Be brief.", **kw)]


def test_scripted_calls_a_tool_whose_name_the_user_says_and_answers_from_its_result():
    from voxgate.agent.shell.responders import ToolCall

    r = ScriptedResponder()
    ask = [{"role": "user", "content": "what is the weather in New York today"}]
    [call] = asyncio.run(parts(r, ask, tools=[WEATHER]))
    assert isinstance(call, ToolCall) and call.name == "get_weather" and json.loads(call.arguments) == {"location": "New York"}
    assert all(isinstance(p, str) for p in asyncio.run(parts(r, ask, tools=[WEATHER], tool_choice="none")))
    forced = asyncio.run(parts(r, [{"role": "user", "content": "hello"}], tools=[WEATHER],
                               tool_choice={"type": "function", "name": "get_weather"}))
    assert isinstance(forced[0], ToolCall)
    answered = ask + [{"role": "assistant", "content": None, "tool_calls": [{"id": call.call_id, "type": "function",
                       "function": {"name": "get_weather", "arguments": call.arguments}}]},
                      {"role": "tool", "tool_call_id": call.call_id, "content": '{"forecast": "fog"}'}]
    assert "forecast fog" in "".join(asyncio.run(parts(r, answered, tools=[WEATHER])))


def test_openai_compatible_endpoint_gets_tools_and_its_streamed_tool_calls_are_reassembled():
    from voxgate.agent.shell.responders import ToolCall

    seen = {}

    async def completions(request):
        seen["body"] = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        pieces = [{"index": 0, "id": "call_abc", "function": {"name": "get_weather", "arguments": ""}},
                  {"index": 0, "function": {"arguments": '{"locat'}}, {"index": 0, "function": {"arguments": 'ion": "Oslo"}'}}]
        for p in pieces:
            await resp.write(f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'tool_calls': [p]}}]})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def run():
        async with chat_server(completions) as url:
            return await parts(OpenAIChatResponder(url, "m", api_key="sk-x"),
                               [{"role": "user", "content": "weather in Oslo?"}], tools=[WEATHER],
                               tool_choice="required")

    [call] = asyncio.run(run())
    assert isinstance(call, ToolCall) and call.call_id == "call_abc" and json.loads(call.arguments) == {"location": "Oslo"}
    assert seen["body"]["tools"] == [{"type": "function", "function": {k: WEATHER[k] for k in ("name", "description",
                                                                                                  "parameters")}}]
    assert seen["body"]["tool_choice"] == "required"


def test_grounding_keeps_calls_that_rest_on_what_the_user_said():
    from voxgate.agent.core.chat import grounded

    said = [{"role": "user", "content": "Is it raining in San Francisco?"}]
    assert grounded(said, WEATHER, {"location": "San Francisco"})
    assert not grounded(said, WEATHER, {"location": "New York"})
    assert not grounded([{"role": "user", "content": "tell me a joke"}], WEATHER, {})
    assert grounded([{"role": "user", "content": "how is the weather"}], WEATHER, {})
    # a follow-up that names nothing does not inherit the city of an earlier turn
    earlier = said + [{"role": "assistant", "content": "It is sunny in San Francisco."},
                      {"role": "user", "content": "Thanks."}]
    assert not grounded(earlier, WEATHER, {"location": "San Francisco"})


def test_smollm2_makes_valid_grounded_tool_calls():
    pytest.importorskip("xllamacpp")
    from voxgate.agent.shell.embedded import LlamaResponder

    r = LlamaResponder()
    call = r.decide_tool([{"role": "user", "content": "What is the weather like in Berlin?"}], [WEATHER], "auto")
    assert call is not None and json.loads(call.arguments) == {"location": "Berlin"}
    assert r.decide_tool([{"role": "user", "content": "Tell me a joke."}], [WEATHER], "auto") is None


def test_smollm2_answers_from_a_tool_result_the_same_way_every_time(monkeypatch):
    """Sampling is for conversation; an answer from a tool's result is greedy, so it carries the result's facts
    (at temperature 0.3, one answer in ten to this result was about a trip, not the weather)."""
    pytest.importorskip("xllamacpp")
    from voxgate.agent.shell.embedded import LlamaResponder

    monkeypatch.setenv("VOXGATE_LLM_TEMPERATURE", "1.0")  # a high setting must not reach the answer from a result
    r = LlamaResponder()
    messages = [{"role": "user", "content": "What is the weather like in Paris today?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "c1",
                 "content": json.dumps({"forecast": "clear skies", "temperature": "18 degrees"})}]
    answers = {"".join(asyncio.run(parts(r, messages))) for _ in range(3)}
    assert len(answers) == 1, answers
    answer = answers.pop().lower()
    assert "18" in answer or "clear" in answer, answer


def _spoken(reply: str, max_sentences: int = 2, said: str = "") -> tuple[str, bool]:
    """A reply streamed through SpokenText in model-sized pieces: what passes, and whether it was ended."""
    import re

    from voxgate.agent.core.text import SpokenText

    s, out = SpokenText(max_sentences, said), ""
    for piece in re.findall(r"\s*\S+|\s+", reply):
        text, over = s.push(piece)
        out += text
        if over:
            return out, True
    return out + s.flush(), False


def test_a_spoken_reply_ends_after_two_sentences_and_says_no_markup():
    assert _spoken("The capital of France is Paris. It is a big city. It has a tower.") == \
        ("The capital of France is Paris. It is a big city.", True)
    assert _spoken("Sure, here's how:\n\n1. **Boil** water.\n2. Add tea.\n3. Wait.") == \
        ("Sure, here's how: Boil water. Add tea.", True)
    assert _spoken("Yes! Dr. Brown is 3.5 meters tall. Really.") == ("Yes! Dr. Brown is 3.5 meters tall.", True)
    assert _spoken("Just words") == ("Just words", False)
    assert _spoken("One. Two. Three.", 0) == ("One. Two. Three.", False)
    # a reply being continued: what was said counts, and is not said again
    assert _spoken(" is Paris. It is big. More.", said="The capital of France") == (" is Paris. It is big.", True)
    assert _spoken(" It is big. More.", said="It is Paris.") == (" It is big.", True)


def test_smollm2_continues_a_reply_it_was_stopped_in(monkeypatch):
    """The agent stops the model after a reply's first words (their synthesis gets the cores) and has it continue
    from them: given the words as an assistant message, the runtime goes on from them (greedy: the same reply)."""
    pytest.importorskip("xllamacpp")
    from voxgate.agent.shell.embedded import LlamaResponder

    monkeypatch.setenv("VOXGATE_LLM_TEMPERATURE", "0")
    r = LlamaResponder(max_tokens=30)
    question = [{"role": "user", "content": "How many legs does a spider have?"}]
    whole = "".join(asyncio.run(parts(r, question)))

    async def stopped_then_continued():
        stream = r.stream(question, "Be brief.")
        first = [await anext(stream) for _ in range(3)]
        await stream.aclose()
        said = "".join(first)
        return said, [p async for p in r.stream(question + [{"role": "assistant", "content": said}], "Be brief.")]

    said, rest = asyncio.run(stopped_then_continued())
    assert rest and said + "".join(rest) == whole, (said, rest, whole)


def test_first_words_go_before_the_rest_of_a_reply():
    """TakeTurns: one model, one request at a time; a reply's first words wait for no reply being continued."""
    import threading
    import time

    from voxgate.agent.shell.embedded import TakeTurns

    turns, order = TakeTurns(), []
    holding, release = threading.Event(), threading.Event()

    def later(name, hold=False):
        with turns.turn(TakeTurns.LATER):
            order.append(name)
            if hold:
                holding.set()
                release.wait(5)

    def first(name):
        with turns.turn(TakeTurns.FIRST):
            order.append(name)

    a = threading.Thread(target=later, args=("rest of A", True))
    a.start()
    holding.wait(5)
    assert not turns.wanted(TakeTurns.LATER)
    def waiting(first_words, rest):  # both are queued before A lets go, however slow the machine
        deadline = time.monotonic() + 5
        while turns._waiting != [first_words, rest] and time.monotonic() < deadline:
            time.sleep(0.005)
        assert turns._waiting == [first_words, rest]

    b = threading.Thread(target=later, args=("rest of B",))
    b.start()
    waiting(0, 1)
    c = threading.Thread(target=first, args=("first words of C",))
    c.start()
    waiting(1, 1)
    assert turns.wanted(TakeTurns.LATER) and not turns.wanted(TakeTurns.FIRST)
    release.set()
    for t in (a, b, c):
        t.join(5)
    assert order == ["rest of A", "first words of C", "rest of B"]


def test_smollm2_gives_way_to_another_calls_first_words_and_goes_on(monkeypatch):
    """A reply being continued stops at its next token when another call's first words wait, and continues from
    what it said once they are out: that call's first token does not wait for the whole reply, and the reply is the
    one it would have been (greedy)."""
    pytest.importorskip("xllamacpp")
    import time

    from voxgate.agent.shell.embedded import LlamaResponder

    monkeypatch.setenv("VOXGATE_LLM_TEMPERATURE", "0")
    monkeypatch.setenv("VOXGATE_LLM_MAX_SENTENCES", "0")
    r = LlamaResponder(max_tokens=60)
    story = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]
    whole = "".join(asyncio.run(parts(r, story)))
    opening = whole.split(" ")[0]

    async def both():
        times = {}
        rest = r.stream(story + [{"role": "assistant", "content": opening}], "Be brief.", max_tokens=59)
        pieces = [await anext(rest)]
        times["other starts"] = time.monotonic()
        other = r.stream([{"role": "user", "content": "What is the capital of France?"}], "Be brief.")
        first = await anext(other)
        times["other's first word"] = time.monotonic()
        await other.aclose()
        pieces += [p async for p in rest]
        times["reply done"] = time.monotonic()
        return first, "".join(pieces), times

    first, rest, times = asyncio.run(both())
    assert first.strip()
    assert times["other's first word"] < times["reply done"], times
    assert opening + rest == whole, (opening, rest, whole)


def test_a_long_conversation_is_cut_in_steps_so_the_prompt_cache_holds():
    from voxgate.agent.core.chat import recent

    history = [{"role": "user", "content": str(i)} for i in range(40)]
    assert recent(history[:16]) == history[:16]
    windows = [recent(history[:n])[0]["content"] for n in range(17, 41)]
    assert all(8 <= len(recent(history[:n])) <= 16 for n in range(17, 41))
    assert len(set(windows)) == 4  # its start moved four times over 24 more messages, not 24 times


def test_warming_reads_what_the_turns_request_begins_with_and_never_waits(monkeypatch):
    """While the user speaks the embedded model reads the conversation so far (the prompt the turn's request will
    begin with, the history window included), and only when it is idle: a warm-up never holds anyone up."""
    import asyncio

    from voxgate.agent.shell.embedded import LlamaResponder, TakeTurns

    from voxgate.agent.core.chat import as_plain_chat, recent, spoken_rules

    asked = []

    class Model:
        def complete(self, chat, max_tokens):
            asked.append((chat, max_tokens))
            return ""

    r = LlamaResponder.__new__(LlamaResponder)
    r.llm = Model()
    monkeypatch.setattr(LlamaResponder, "turns", TakeTurns())
    for n in (3, 16, 23, 24):  # around the window's steps
        history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(n)]
        asked.clear()
        asyncio.run(r.warm(history, "Be brief."))
        nxt = [{"role": "system", "content": spoken_rules("Be brief.")}] + recent(as_plain_chat(history + [
            {"role": "user", "content": "next question"}]))
        [(chat, max_tokens)] = asked
        assert max_tokens == 1 and nxt[:len(chat)] == chat and len(chat) == len(nxt) - 1, n
    asked.clear()
    with LlamaResponder.turns.turn(TakeTurns.LATER):  # another call's reply is being made: no warm-up
        asyncio.run(r.warm(history, "Be brief."))
    assert asked == []
    asyncio.run(r.warm([], "Be brief."))  # nothing said yet: the instructions were primed at start-up
    assert asked == []
