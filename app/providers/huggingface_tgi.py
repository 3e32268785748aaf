"""Text Generation Inference (TGI) wire formats, and the error bodies of every Hugging Face API.

Pure functions and a stream state machine, no I/O (``app.providers.huggingface`` sends).

Text completions go to TGI's native routes, ``POST /generate`` and ``POST /generate_stream``
(``{"inputs", "parameters"}``), because TGI's own ``details`` report what its OpenAI-style
``/v1/completions`` does not: the finish reason as TGI saw it, the generated token count, and the
prompt's token count (``details.prefill`` in a complete answer when ``decoder_input_details`` is
asked for, ``details.input_length`` in a stream's last event). The OpenAI request becomes:

- ``prompt``: one string (or a list holding one); several prompts and token-id prompts are
  refused (400, ``prompt``): TGI generates for one text, and ids of the client's tokenizer mean
  nothing to the served model. ``echo`` prepends the prompt (the gateway does it, in streams too).
- ``max_tokens`` (else the target's ``max_tokens_default``) -> ``max_new_tokens``; ``stop`` ->
  ``stop`` (always a list); ``seed`` -> ``seed`` (a negative one is refused: TGI reads u64);
  ``frequency_penalty`` -> ``frequency_penalty``.
- Sampling as TGI's own Messages API maps it: ``temperature: 0`` is greedy (``do_sample:
  false``); any other or none samples (``do_sample: true``, OpenAI's default is temperature 1).
  ``top_p`` >= 1 is not sent (TGI takes only 0 < top_p < 1, and 1 filters nothing); ``top_p: 0``
  is greedy.
- Refused (400) because TGI cannot honour them and the answer would differ: ``n`` > 1,
  ``logprobs``, ``logit_bias``, ``suffix``, a non-zero ``presence_penalty`` (TGI has only a
  multiplicative ``repetition_penalty``; send that by name instead), ``max_tokens: 0`` (TGI
  refuses a ``max_new_tokens`` of 0, and without ``logprobs`` an echo alone says nothing).
- TGI-native parameters sent by the client (the SDK's ``extra_body``: ``top_k``,
  ``repetition_penalty``, ``typical_p``, ``truncate``, ``watermark``, ``grammar``,
  ``adapter_id``, ``best_of``, ``top_n_tokens``, ``do_sample``, ``return_full_text``) are
  forwarded in ``parameters``; the target's ``params`` lie underneath everything. ``details`` is
  always asked for.

Chat goes to TGI's Messages API (``/v1/chat/completions``), OpenAI-compatible but for what
``tgi_chat_payload`` rewrites or refuses: ``response_format`` in TGI's grammar form (``{"type":
"json", "value": <schema>}``; json_object becomes the schema ``{"type": "object"}``), ``stop`` as a
list, ``top_p`` as for ``/generate`` (>= 1 not sent, 0 sent as ``temperature: 0``, which TGI's
Messages API makes greedy), ``developer`` messages as ``system`` ones (TGI hands roles to the
model's chat template unchanged), one token limit (``max_tokens``, the smaller when the client sent
``max_completion_tokens`` too: TGI reads that name as an alias, and both at once as a duplicate
field), no ``content`` beside an assistant's ``tool_calls`` (``_messages``), a function tool's
missing ``parameters`` filled in (``_tools``), ``presence_penalty`` 0 left out and any other
refused (``_presence_penalty``), ``n`` > 1 and ``logit_bias`` refused (TGI reads
``logit_bias`` as a list and cannot make several choices), ``response_format`` together with
``tools`` refused (TGI: "Grammar and tools are mutually exclusive"), and what TGI would refuse
or ignore refused too: custom tools and custom tool calls, audio output, ``web_search_options``
(``app.providers.refusals``). TGI before 2.1 answered
``finish_reason: "eos_token"``; it is read as ``stop``. A choice that called tools finishes with
``tool_calls``, where TGI (3.x too) says ``stop`` (``FinishReasons``). TGI's ids are made
OpenAI's (``TgiIds``): its empty completion ``id`` becomes a ``chatcmpl-`` one, and its tool-call
ids (``"0"`` on every non-streamed call) unique ``call_`` ones.

Stop sequences: TGI says ``stop_sequence`` where one ended the answer (its chat answers too: its
OpenAI-compliant reasons rename only ``eos_token``), not which, and keeps the matched sequence at
the end of the text (it tests the request's sequences, in order, against the text's end after
each token). The finish reads as ``stop``, and the choice's ``stop_reason`` names the sequence
(the first of the request's the text ends with), as vLLM reports it; ``/v1/messages`` answers it
as ``stop_reason: "stop_sequence"``. The text keeps the sequence, as TGI sent it.

Errors: TGI and TEI answer ``{"error": "...", "error_type": "..."}``; the router answers OpenAI's
shape or ``{"error": "..."}``. 424 (the model failed while generating) is a retryable 502; 422
(TGI/TEI input validation) is the client's 400; 429 (overloaded) stays 429 with its
``Retry-After``; the rest follows ``errors.from_upstream_status``.

(Over 400 lines: one server's two generation routes, chat and ``/generate``, whole and streamed,
share its parameter mapping, finish reasons, stop-sequence naming and errors.)
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from app import errors
from app.providers.base import CompletionCall, Json, Target, developer_as_system
from app.providers.http import read_error_body
from app.providers.refusals import refuse_custom_payload, refuse_outputs
from app.providers.stops import name_stop, stopped_by
from app.usage import Usage, estimate_tokens, token_count

GENERATE_PATH = "/generate"
GENERATE_STREAM_PATH = "/generate_stream"

NATIVE_PARAMETERS = frozenset({
    "adapter_id", "best_of", "decoder_input_details", "do_sample", "grammar",
    "repetition_penalty", "return_full_text", "top_k", "top_n_tokens", "truncate", "typical_p",
    "watermark",
})
"""TGI ``GenerateParameters`` fields a client may send by name (those OpenAI also names are
translated from the OpenAI field instead)."""

FINISH_REASONS = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}

ERROR_STATUS = {"overloaded": 429, "validation": 422, "tokenizer": 422, "generation": 424,
                "backend": 424, "empty": 400, "unhealthy": 503, "template_error": 422,
                "tool_error": 422, "missing_template_variable": 422}
"""The HTTP status TGI and TEI answer for each ``error_type``, for errors that arrive as an event
inside a 200 stream."""


def _refuse(message: str, param: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(message, param=param)


def prompt_text(call: CompletionCall) -> str:
    """The one text prompt of a completion call (see the module docstring for what is refused)."""
    prompt = call.request.prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if prompt and all(isinstance(item, str) for item in prompt):
        raise _refuse("TGI completes one prompt per request; send the prompts one by one",
                      "prompt")
    raise _refuse("token-id prompts cannot be sent to TGI (they are ids of another tokenizer); "
                  "send text", "prompt")


def _sampling(request: Any, parameters: Json) -> None:
    """OpenAI's temperature and top_p as TGI's ``do_sample``/``temperature``/``top_p``."""
    greedy = request.temperature == 0 or request.top_p == 0
    parameters["do_sample"] = not greedy
    if greedy:
        return
    if request.temperature is not None:
        parameters["temperature"] = request.temperature
    if request.top_p is not None and request.top_p < 1:
        parameters["top_p"] = request.top_p


def generate_request(call: CompletionCall, *, target: Target, stream: bool,
                     prefill: bool) -> Json:
    """The ``/generate`` (or ``/generate_stream``) body for a completion call. ``prefill``: ask
    for the prompt's tokens (``decoder_input_details``) to count them; never in streams, which
    TGI refuses and which report ``input_length`` instead."""
    request, body = call.request, call.body
    if request.n not in (None, 1):
        raise _refuse("TGI makes one completion per request; n must be 1", "n")
    if request.logprobs is not None:
        raise _refuse("logprobs are not available from TGI's generate route", "logprobs")
    if request.logit_bias:
        raise _refuse("TGI has no logit_bias", "logit_bias")
    if request.suffix:
        raise _refuse("TGI does not complete around a suffix", "suffix")
    if request.presence_penalty:
        raise _refuse("TGI has no presence_penalty; send repetition_penalty instead",
                      "presence_penalty")
    if request.seed is not None and request.seed < 0:
        raise _refuse("TGI takes a seed of 0 or more", "seed")
    parameters: Json = dict(target.params)
    _sampling(request, parameters)
    if request.max_tokens == 0:
        raise _refuse("TGI generates at least one token; max_tokens 0 (echo without "
                      "generating) is not available from TGI", "max_tokens")
    limit = request.max_tokens or target.max_tokens_default
    if limit is not None:
        parameters["max_new_tokens"] = limit
    if request.stop is not None:
        parameters["stop"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.seed is not None:
        parameters["seed"] = request.seed
    if request.frequency_penalty is not None:
        parameters["frequency_penalty"] = request.frequency_penalty
    parameters.update({k: v for k, v in body.items() if k in NATIVE_PARAMETERS})
    parameters["details"] = True
    if stream:
        parameters.pop("decoder_input_details", None)
    elif prefill:
        parameters["decoder_input_details"] = True
    return {"inputs": prompt_text(call), "parameters": parameters}


def finish_reason(details: Any) -> str:
    """OpenAI's finish reason for TGI's ``details`` (no details: ``stop``)."""
    reason = details.get("finish_reason") if isinstance(details, dict) else None
    return FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


def stop_sequence(reason: Any, text: str, stops: Sequence[str]) -> str | None:
    """The stop sequence that ended an answer TGI finished with ``reason``: for
    ``stop_sequence``, the one its ``text`` ends with (TGI keeps the matched sequence in the
    text; ``stops.stopped_by``), else None."""
    return stopped_by(stops, text=text) if reason == "stop_sequence" else None


def _reason(details: Any) -> Any:
    return details.get("finish_reason") if isinstance(details, dict) else None


def _count(details: Any, key: str) -> int | None:
    """``details[key]`` as a ``token_count``; None (that count estimated) when not one."""
    return token_count(details.get(key)) if isinstance(details, dict) else None


def to_text_completion(answer: Any, *, completion_id: str, model: str, created: int,
                       prompt: str, echo: bool, stops: Sequence[str] = ()) -> tuple[Json, Usage]:
    """The OpenAI ``text_completion`` body and usage for a ``/generate`` answer (TGI's ``/``
    route wraps it in a one-element list, which is read too).

    Completion tokens are ``details.generated_tokens``; prompt tokens are the length of
    ``details.prefill`` when TGI sent it, else estimated (and the usage marked estimated). A
    ``stop_sequence`` finish names the sequence in the choice's ``stop_reason``
    (``stop_sequence``; ``stops``: the request's)."""
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    text = answer.get("generated_text") if isinstance(answer, dict) else None
    if not isinstance(text, str):
        raise errors.BadUpstreamResponse("upstream answer has no generated_text")
    details = answer.get("details")
    generated = _count(details, "generated_tokens")
    prefill = details.get("prefill") if isinstance(details, dict) else None
    prompt_tokens = len(prefill) if isinstance(prefill, list) and prefill else None
    usage = Usage(
        prompt_tokens=estimate_tokens(prompt) if prompt_tokens is None else prompt_tokens,
        completion_tokens=estimate_tokens(text) if generated is None else generated,
        estimated=prompt_tokens is None or generated is None)
    body: Json = {
        "id": completion_id, "object": "text_completion", "created": created, "model": model,
        "choices": [name_stop({"text": prompt + text if echo else text, "index": 0,
                               "logprobs": None, "finish_reason": finish_reason(details)},
                              stop_sequence(_reason(details), text, stops))],
        "usage": usage.to_openai(),
    }
    return body, usage


class GenerateStream:
    """Turns TGI's ``/generate_stream`` events into OpenAI ``text_completion`` chunks.

    Each event carries one ``token`` (special tokens, such as the end-of-sequence one, add no
    text); the last one also carries ``generated_text`` and ``details`` (``finish_reason``,
    ``generated_tokens``, ``input_length``), after which the translator emits the finish chunk and
    a usage chunk (``choices: []``) and ``done`` is true; a ``stop_sequence`` finish names the
    sequence (``stop_sequence``, from ``generated_text``) in the finish chunk's ``stop_reason``.
    An ``{"error", "error_type"}`` event
    raises its mapped error; ``finish`` raises ``BadUpstreamResponse`` if the stream ended before
    the last event.
    """

    def __init__(self, *, completion_id: str, model: str, created: int, prompt: str,
                 echo: bool, stops: Sequence[str] = ()) -> None:
        """``stops``: the request's stop sequences."""
        self._base: Json = {"id": completion_id, "object": "text_completion",
                            "created": created, "model": model}
        self._stops = stops
        self._prompt = prompt
        self._echo = echo
        self._tokens = 0
        self.done = False

    def _chunk(self, text: str, finish: str | None = None) -> Json:
        return {**self._base, "choices": [{"text": text, "index": 0, "logprobs": None,
                                           "finish_reason": finish}]}

    def feed(self, data: Json) -> list[Json]:
        """The chunks for one event's JSON."""
        if data.get("error") is not None:
            raise error_from_event(data)
        chunks: list[Json] = []
        if self._echo and self._tokens == 0 and self._prompt:
            chunks.append(self._chunk(self._prompt))
        token = data.get("token")
        if not isinstance(token, dict):
            raise errors.BadUpstreamResponse("upstream stream event has no token")
        self._tokens += 1
        text = token.get("text")
        if isinstance(text, str) and text and not token.get("special"):
            chunks.append(self._chunk(text))
        if data.get("generated_text") is None:
            return chunks
        details = data.get("details")
        generated, prompt = _count(details, "generated_tokens"), _count(details, "input_length")
        usage = Usage(
            prompt_tokens=estimate_tokens(self._prompt) if prompt is None else prompt,
            completion_tokens=self._tokens if generated is None else generated,
            estimated=prompt is None or generated is None)
        finish = self._chunk("", finish_reason(details))
        text = data["generated_text"]
        name_stop(finish["choices"][0], stop_sequence(
            _reason(details), text if isinstance(text, str) else "", self._stops))
        chunks.append(finish)
        chunks.append({**self._base, "choices": [], "usage": usage.to_openai()})
        self.done = True
        return chunks

    def finish(self) -> None:
        """Call when the upstream stream ends; raises if it ended before the last event."""
        if not self.done:
            raise errors.BadUpstreamResponse(
                "upstream stream ended before its last event (generated_text); the answer is "
                "truncated")


# --- chat through TGI's Messages API -------------------------------------------------------


def _grammar(response_format: Any) -> Json | None:
    """TGI's grammar for an OpenAI ``response_format`` (None: unconstrained)."""
    if not isinstance(response_format, dict) or "value" in response_format:
        return response_format  # absent, or already in TGI's own form
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "json", "value": {"type": "object"}}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise _refuse("response_format json_schema needs a schema object",
                          "response_format.json_schema.schema")
        return {"type": "json", "value": schema}
    return None  # "text"


def _has_text(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content)
    return isinstance(content, list) and any(
        not isinstance(part, dict) or part.get("text") or part.get("type") != "text"
        for part in content)


def _messages(messages: Any) -> Any:
    """The messages as TGI reads them (a new list): ``developer`` as ``system``
    (``developer_as_system``), and an assistant turn's ``tool_calls`` never beside a
    ``content``: TGI reads a message holding both as its content alone and drops the calls (its
    ``MessageBody`` is an untagged enum, ``content`` first), so the tool results that follow
    would answer calls the model never sees. An empty content is left out; a text goes in an
    assistant message of its own just before the one with the calls."""
    messages = developer_as_system(messages)
    if not isinstance(messages, list):
        return messages
    out: list[Any] = []
    for message in messages:
        if isinstance(message, dict) and message.get("tool_calls") \
                and message.get("content") is not None:
            calls = {k: v for k, v in message.items() if k != "content"}
            if _has_text(message["content"]):
                out.append({k: v for k, v in message.items() if k != "tool_calls"})
            out.append(calls)
        else:
            out.append(message)
    return out


EMPTY_PARAMETERS: Json = {"type": "object", "properties": {}}


def _tools(tools: Any) -> Any:
    """Function tools with ``parameters`` (a new list): TGI requires them (its
    ``FunctionDefinition.arguments``, which ``parameters`` aliases, has no default), while
    OpenAI's API makes them optional; a function without any takes none."""
    if not isinstance(tools, list):
        return tools
    out: list[Any] = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and "parameters" not in function:
            tool = {**tool, "function": {**function, "parameters": EMPTY_PARAMETERS}}
        out.append(tool)
    return out


def _presence_penalty(payload: Json) -> None:
    """TGI's Messages API turns ``presence_penalty`` into ``repetition_penalty =
    presence_penalty + 2.0`` (so OpenAI's "off", 0, would be a strong 2.0): 0 is left out (no
    penalty, as OpenAI means it), any other value refused, as on completions."""
    presence = payload.get("presence_penalty")
    if presence is None or (presence == 0 and not isinstance(presence, bool)):
        payload.pop("presence_penalty", None)
        return
    raise _refuse("TGI has no presence_penalty (its chat API would apply presence_penalty + 2 "
                  "as a repetition_penalty); send repetition_penalty instead",
                  "presence_penalty")


def _one_limit(payload: Json) -> None:
    """One token limit, as ``max_tokens`` (in place): TGI reads ``max_completion_tokens`` as
    an alias of ``max_tokens``, so a body with both is a duplicate field to its JSON parser
    (422). The smaller of the two is kept, as the other native translations do."""
    if "max_completion_tokens" not in payload:
        return
    newer = payload.pop("max_completion_tokens")
    older = payload.get("max_tokens")
    limits = [n for n in (older, newer) if isinstance(n, int) and not isinstance(n, bool)]
    if limits:
        payload["max_tokens"] = min(limits)
    elif newer is not None:
        payload["max_tokens"] = newer


def _chat_top_p(payload: Json) -> None:
    """``top_p`` as TGI takes it (only 0 < top_p < 1; its Messages API passes it on unchanged):
    1 or more filters nothing and is not sent; 0 is greedy, which TGI's Messages API spells
    ``temperature: 0``."""
    top_p = payload.get("top_p")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)):
        return
    if top_p >= 1:
        del payload["top_p"]
    elif top_p <= 0:
        del payload["top_p"]
        payload["temperature"] = 0


def tgi_chat_payload(payload: Json) -> Json:
    """An OpenAI chat payload as TGI's Messages API reads it (in place; see the module
    docstring)."""
    if payload.get("n") not in (None, 1):
        raise _refuse("TGI makes one choice per request; n must be 1", "n")
    if payload.get("logit_bias"):
        raise _refuse("TGI cannot apply an OpenAI logit_bias", "logit_bias")
    refuse_custom_payload(payload, who="TGI servers")
    refuse_outputs(payload, who="TGI servers")
    _presence_penalty(payload)
    if "messages" in payload:
        payload["messages"] = _messages(payload["messages"])
    if "tools" in payload:
        payload["tools"] = _tools(payload["tools"])
    _one_limit(payload)
    _chat_top_p(payload)
    grammar = _grammar(payload.pop("response_format", None))
    if grammar is not None:
        if payload.get("tools"):
            raise _refuse("TGI cannot constrain the answer with both response_format and tools",
                          "response_format")
        payload["response_format"] = grammar
    if isinstance(payload.get("stop"), str):
        payload["stop"] = [payload["stop"]]
    return payload


class FinishReasons:
    """TGI's finish reasons as OpenAI's, for one answer or for the chunks of one stream, in
    order (in place): TGI's ``stop_sequence`` (and older TGI's ``eos_token``) read as ``stop``,
    a ``stop_sequence`` naming the sequence in the choice's ``stop_reason`` (``stop_sequence``:
    the one the choice's text ends with), and a choice that called tools finishes with
    ``tool_calls`` where TGI says ``stop`` (its reason is the generation's: the end-of-sequence
    token, whatever the message holds)."""

    def __init__(self, stops: Sequence[str] = ()) -> None:
        """``stops``: the request's stop sequences."""
        self._stops = stops
        self._calling: set[Any] = set()
        """Indexes of the choices that have called a tool so far."""
        self._tails: dict[Any, str] = {}
        """Per choice, the end of its text so far, as long as the longest stop sequence."""
        self._keep = max((len(s) for s in stops), default=0)

    def __call__(self, body: Json) -> Json:
        for choice in body.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            said = choice.get("message") or choice.get("delta")
            if isinstance(said, dict):
                if said.get("tool_calls"):
                    self._calling.add(index)
                text = said.get("content")
                if self._keep and isinstance(text, str) and text:
                    self._tails[index] = (self._tails.get(index, "") + text)[-self._keep:]
            reason = choice.get("finish_reason")
            name_stop(choice, stop_sequence(reason, self._tails.get(index, ""), self._stops))
            if reason in ("eos_token", "stop_sequence"):
                reason = "stop"
            if reason == "stop" and index in self._calling:
                reason = "tool_calls"
            if reason is not None:
                choice["finish_reason"] = reason
        return body


def normalize_finish(body: Json, stops: Sequence[str] = ()) -> Json:
    """``FinishReasons`` for one whole answer (in place)."""
    return FinishReasons(stops)(body)


class TgiIds:
    """TGI's ids as OpenAI's, for one answer or for the chunks of one stream, in order (in
    place). TGI's router sends an empty ``id`` (on every chunk of a stream), gives every
    non-streamed tool call the id ``"0"`` and a streamed one a counter (the highest numeric id
    of the conversation plus one), and adds ``description: null`` to a called function. An
    empty ``id`` becomes a ``chatcmpl-`` one (the same on every chunk of a stream); a tool
    call's empty or numeric id a ``call_`` one, unique, and the same on every delta of that
    call (by choice and call index); a null ``description`` is left out."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._calls: dict[tuple[Any, Any], str] = {}

    def __call__(self, body: Json) -> Json:
        if not body.get("id"):
            if self._id is None:
                self._id = "chatcmpl-" + secrets.token_hex(12)
            body["id"] = self._id
        for choice in body.get("choices") or ():
            said = choice.get("message") or choice.get("delta") \
                if isinstance(choice, dict) else None
            calls = said.get("tool_calls") if isinstance(said, dict) else None
            for position, call in enumerate(calls if isinstance(calls, list) else ()):
                if isinstance(call, dict):
                    self._call(call, (choice.get("index", 0), call.get("index", position)))
        return body

    def _call(self, call: Json, key: tuple[Any, Any]) -> None:
        function = call.get("function")
        if isinstance(function, dict) and "description" in function \
                and function["description"] is None:
            del function["description"]
        ident = call.get("id")
        if isinstance(ident, str) and (not ident or ident.isdigit()):
            found = self._calls.get(key)
            if found is None:
                found = self._calls[key] = "call_" + secrets.token_hex(12)
            call["id"] = found


# --- errors ----------------------------------------------------------------------------------


def map_error(status: int, payload: Any, text: str) -> errors.GatewayError:
    """The gateway error for a Hugging Face error answer (TGI, TEI or the router)."""
    message, code, param = read_error_body(payload, text[:500] or f"HTTP {status}")
    kind = payload.get("error_type") if isinstance(payload, dict) else None
    if code is None and isinstance(kind, str):
        code = kind.lower()
    if status == 424:
        # The model failed while running (TGI: generation; TEI: backend): the request may
        # succeed elsewhere, so it is retryable; not the client's fault, so not a 4xx.
        return errors.UpstreamUnavailable(message, status=502, code=code or "generation")
    if status == 422:
        # TGI/TEI input validation (a limit, a value out of range): what OpenAI answers 400.
        return errors.UpstreamRejected(message, status=400, code=code or "validation",
                                       param=param)
    return errors.from_upstream_status(status, message, code=code, param=param)


def error_from_event(data: Json) -> errors.GatewayError:
    """The gateway error for an ``{"error", "error_type"}`` event inside a 200 stream."""
    kind = data.get("error_type")
    status = ERROR_STATUS.get(kind.lower(), 500) if isinstance(kind, str) else 500
    return map_error(status, data, "TGI stream failed")
