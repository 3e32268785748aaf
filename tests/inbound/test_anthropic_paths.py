"""The client's path of each part of a translated Messages request (``anthropic_paths``)."""

from __future__ import annotations

from app import errors
from app.inbound.anthropic import read_request
from app.inbound.anthropic_paths import client_error


def test_chat_paths_map_back_to_the_clients() -> None:
    """A system message and tool results split out of a turn shift the chat messages; each
    chat path maps back to the turn, block or tool it came from, in the client's field names."""
    origins = read_request({"model": "m", "max_tokens": 5, "system": "s", "stop_sequences": ["x"],
                            "tools": [{"type": "web_search_20250305", "name": "w"},
                                      {"name": "f", "input_schema": {"type": "object"}}],
                            "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": ""},
                                          {"type": "tool_use", "id": "t1", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"},
                                     {"type": "text", "text": "a"},
                                     {"type": "image", "source": {"type": "url", "url": "u"}}]},
    ]}).origins
    expected = {
        "messages[0].content": "system",
        "messages[1].content": "messages[0].content",
        "messages[2].tool_calls[0].function.name": "messages[1].content[1].name",
        "messages[2].tool_calls[0].function.arguments": "messages[1].content[1].input",
        "messages[3].tool_call_id": "messages[2].content[0].tool_use_id",
        "messages[4].content[1].image_url.url": "messages[2].content[2]",
        "messages[4].role": "messages[2]",
        "messages[9]": "messages",
        "tools[0].function.name": "tools[1].name",
        "tools[0].function.parameters": "tools[1].input_schema",
        "tools[0].type": "tools[1]",
        "stop": "stop_sequences",
        "user": "metadata.user_id",
        "tool_choice.function.name": "tool_choice",
        "temperature": "temperature",
    }
    assert {chat: origins.client_path(chat) for chat in expected} == expected


def test_a_refusal_is_rewritten_where_its_path_differs() -> None:
    """The param and the path quoted in the message change; a refusal whose path is the
    client's too is the same object."""
    origins = read_request({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "hi"}]}).origins
    exc = errors.InvalidRequest("Invalid value for 'stop': too long.", param="stop", code="c")
    renamed = client_error(exc, origins)
    assert (renamed.message, renamed.param, renamed.code) == (
        "Invalid value for 'stop_sequences': too long.", "stop_sequences", "c")
    same = errors.InvalidRequest("Invalid value for 'temperature': x.", param="temperature")
    assert client_error(same, origins) is same
