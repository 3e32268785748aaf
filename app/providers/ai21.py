"""AI21 Studio's Jamba chat completions (``POST {base_url}/chat/completions``, ``Authorization:
Bearer``), plain and streamed, behind the OpenAI-shaped provider seam.

AI21's endpoint looks like OpenAI's but is not one (AI21's OpenAPI ``ChatRequest`` and the
``ai21`` SDK's models): message content is a string, there is no ``tool_choice``, answers have
no ``object``/``created``/``model``, stream usage rides on the last content chunk, and
validation errors are FastAPI's 422 ``{"detail": [...]}``. So the request is translated
(``ai21_request``), not forwarded, and the answer translated back (``ai21_response``); the
HTTP, SSE, error-scrubbing and retry-after pieces are the shared ones (``app.providers.http``).
Where the two APIs differ, this is what a client gets:

- Content parts: text parts are joined (by newlines) into AI21's single string; image, audio,
  file and any other part is refused (400, ``param`` naming the part). An assistant's earlier
  ``refusal`` parts count as its text.
- Roles: ``system``, ``user``, ``assistant``, ``tool`` as they are; ``developer`` becomes
  ``system``; legacy ``function`` messages are refused. A message's ``name`` is dropped (AI21
  messages have none). Messages keep their order.
- ``n``: 1..16 as AI21 allows; refused above 16, above 1 when streaming (AI21 streams one
  choice) and above 1 with ``temperature: 0`` (AI21 refuses identical choices).
- ``max_tokens``: at most 4096 (refused above); ``max_completion_tokens`` becomes
  ``max_tokens`` (the smaller when both are sent); without either, the target's
  ``max_tokens_default`` (capped at 4096), else AI21's own default.
- ``top_p``: AI21's range excludes 0, so ``top_p: 0`` is refused; ``temperature`` (0..2) and
  ``stop`` pass as they are.
- Tools: functions, as AI21 takes them (a missing ``parameters`` becomes an empty object
  schema; a schema whose type is not ``object`` is refused). AI21 has no ``tool_choice``:
  ``auto`` is its behaviour and is dropped, ``none`` sends no tools, ``required`` or a named
  function is refused. ``parallel_tool_calls: false`` and ``strict: true`` are refused (AI21
  can guarantee neither); ``parallel_tool_calls: true`` and ``strict: false`` are no-ops.
- ``response_format``: ``json_object`` is AI21's JSON mode and is sent; ``text`` is a no-op;
  ``json_schema`` is refused (AI21 has no schema-constrained output).
- Refused because the client would read a wrong or missing result: ``logprobs`` /
  ``top_logprobs``, ``logit_bias``, ``audio``, non-text ``modalities``, legacy ``functions`` /
  ``function_call``, ``web_search_options``, custom tools (``app.providers.refusals``).
- Dropped, because they cannot change what the answer is: ``seed``, ``presence_penalty``,
  ``frequency_penalty`` (sampling hints AI21's chat API does not take), ``user``, ``metadata``,
  ``store``, ``service_tier``, ``stream_options`` (usage is always reported, and the gateway
  hands it on only when asked), ``prediction``, ``reasoning_effort``; any other field the
  client adds is not forwarded either (AI21 ignores fields it does not define). The target's
  ``params`` lie underneath the payload, sent as they are: that is where AI21-native settings
  go.
- ``documents`` (AI21's grounding documents), sent by the client beside the OpenAI fields (the
  OpenAI SDK's ``extra_body``), is forwarded as sent.
- Answers: ``object``, ``created`` and ``model`` (the target's model) are added, ``meta``
  dropped; streams end at ``data: [DONE]``, and one that ends without it and without a finish
  reason is a truncated answer (``BadUpstreamResponse``).
- Text completions and embeddings: AI21's current API has neither for Jamba, so the class does
  not implement them and the gateway never routes them here.

Errors: FastAPI-style ``detail`` bodies are read by ``ai21_response.map_error`` into the
gateway's error tree, status kept (an upstream 429 stays 429 with its ``Retry-After``; a 401 or
403 is the gateway's own credential failing, a 502). The API key travels only in the
``Authorization`` header and is scrubbed from every error message.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp
from pydantic import SecretStr

from app import errors
from app.providers.ai21_request import translate_request
from app.providers.ai21_response import StreamTranslator, map_error, to_chat_completion
from app.providers.base import ChatCall, Json, OpeningHold, ProviderBase, Result, Target
from app.providers.event_json import EventJson
from app.providers.http import Upstream, drain
from app.providers.openai import OPENING, opening_kind

CHAT_PATH = "/chat/completions"


class AI21Provider(ProviderBase):
    """AI21 Studio: ``base_url`` ends with the API version (``/studio/v1``)."""

    type: Literal["ai21"]
    api_key: SecretStr
    base_url: str = "https://api.ai21.com/studio/v1"


class AI21Chat:
    """Jamba chat over AI21's chat completions; see the module docstring for the translation."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def chat(self, call: ChatCall, *, target: Target) -> Result:
        payload = translate_request(call, target=target, stream=False)
        answer = await self._upstream.post_json(CHAT_PATH, payload, timeout_s=target.timeout_s)
        body, usage = to_chat_completion(answer, model=target.model, created=int(time.time()))
        return Result(body=body, usage=usage)

    async def stream_chat(self, call: ChatCall, *, target: Target) -> AsyncIterator[Json]:
        """Chunks as they arrive, then a usage chunk (``choices: []``) when AI21 reported usage.

        AI21's role chunk (``{"role": "assistant"}``, sent before its model's first token) is
        held until the first chunk with something generated in it (``OpeningHold``, as the
        ``openai`` type holds it), so a failure before that token may still go to the next
        target and the call's TTFT counts to it. Upstream errors before the first chunk raise
        from the first ``__anext__``; an in-band
        error frame raises ``UpstreamError``; a stream that ends without ``[DONE]`` and without
        a finish reason raises ``BadUpstreamResponse``. Closing the generator closes the
        upstream connection.
        """
        payload = translate_request(call, target=target, stream=True)
        translator = StreamTranslator(model=target.model, created=int(time.time()))
        events = self._upstream.stream_sse(CHAT_PATH, payload, timeout_s=target.timeout_s)
        read = EventJson()
        hold = OpeningHold(OPENING)
        try:
            async for event in events:
                if event.data == "[DONE]":
                    for chunk in hold.release(None, []):
                        yield chunk
                    await drain(events)
                    return
                for chunk in translator.feed(read(event.data)):
                    for opened in hold.release(opening_kind(chunk), [chunk]):
                        yield opened
        finally:
            await events.aclose()
        if not translator.finished:
            raise errors.BadUpstreamResponse(
                "upstream stream ended without [DONE] or a finish_reason; the answer is "
                "truncated")

    async def aclose(self) -> None:
        """The shared session belongs to the app; nothing of our own to close."""


def build(config: AI21Provider, session: aiohttp.ClientSession) -> AI21Chat:
    headers = {"Authorization": f"Bearer {config.api_key.get_secret_value()}", **config.headers}
    return AI21Chat(Upstream.from_config(session, config, base_url=config.base_url,
                                         headers=headers, error_mapper=map_error))
