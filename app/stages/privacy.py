"""Privacy (``Slot.PRIVACY``): sensitive values never reach a third party unless policy allows.

(Over 400 lines: the stage's hooks, and the route narrowing and refusals each of its policies
needs (found values, token ids it cannot read, a scan past its budget), which share the call's
state; the detectors, the walk and the restoring are their own modules under ``app.privacy``.)

A call's policy (``app.privacy.policy``) is its public model's, tightened (never loosened) by
the caller's own setting: the stricter of its virtual key's and its team's ``privacy``
(``Caller.privacy``, read from the key directory's cached records, so an admin change applies
from the key's next call on every gateway). For each call whose policy is not a plain
``allow``, the stage scans every text part of what the gateway would forward
(``app.privacy.walk``: ``call.body`` and, for ``/v1/messages``, ``call.native``) with the
policy's detectors, counts what it found by entity type into the call record
(``privacy_entities``, ``privacy_action``; never the values), and acts:

- ``allow``: nothing (the counts are kept when ``privacy.observe`` is on);
- ``block``: 400 ``sensitive_data_blocked`` naming the entity types and their counts;
- ``redact``: each value replaced by its typed placeholder (``<EMAIL_1>``: ``Vault``) in the body
  and the native body, wherever it appears (``app.privacy.scan``: a value found once, in
  context, is found in every other text part too), when any of the call's targets is ``trust:
  third_party`` (a route of only private targets gets the original: nothing leaves). One body
  serves every attempt, so a private fallback behind a third party gets the placeholders too.
  The originals go back into the answer: unary answers whole (``on_answer``), streams chunk by
  chunk (``on_chunk``, ``app.privacy.stream``; what is still held back when the stream ends
  goes out in one more chunk: ``on_stream_end``);
- ``private_only``: the call's route narrowed to its ``trust: private`` targets; a model without
  one answers 503 ``no_private_target``, and so does a call whose private targets have all
  failed (down, overloaded, timed out, circuit open: ``Route.fail_closed``; a 4xx the request
  caused is answered as it is); its attempts stay in the record. The call never falls back to
  a third party;
- embeddings: ``redact`` is not applied (a redacted text is another vector); on a route with a
  third-party target the policy's ``embeddings`` setting (``block`` or ``private_only``) is
  applied instead, and a route of only private targets gets the original, as under ``redact``.

Token ids (an embedding's ``input``, a completion's ``prompt``) cannot be scanned: under any
action but ``allow`` they may go to private targets only (``_unscreened``: under
``private_only`` the route is narrowed to them; under ``redact`` and ``block`` a route with a
third-party target, like one with no private target, is refused: 400 ``token_ids_not_screened``).

The built-in detectors run on the event loop for a request of up to ``_LOOP_SCAN_CHARS`` of
text, on a worker thread past it. Their phone checks share one ``ScanBudget`` per request
(``app.privacy.detect``): a request that spends it (thousands of distinct digit groups) has its
unchecked phone candidates counted as phone numbers, and under ``block``, and under ``redact``
with a third-party target, is refused: 413 ``privacy_scan_limit``, nothing sent.

A policy with ``regions`` narrows every call's route (found values or not) to the targets whose
provider's ``region`` is listed; none left is 503 ``no_target_in_region``.

A shadow copy of an answered call (an experiment's ``shadow`` variant) runs under its
original's policy too, applied to the shadow variant's targets (``on_shadow``).

Captured bodies (``calllog.capture_bodies``), the record's ``end_user`` and ``tags`` (the
request's ``user`` and ``metadata``), its error message and its ``request_id`` (the client's
``x-request-id``, answered back as sent) are stored with the found values replaced by their
placeholders, whatever the action (``on_end``; an answer's or an error's copy of a value found
in the request too). A call refused before this stage scanned it is
screened when its record is sealed (``Pipeline.seal``, with this stage's ``policies``). The metric
``switchboard_privacy_detections_total{entity,action}`` counts the values found.

With ``privacy.presidio``, ``prepare`` loads the config's Presidio scanner before the config
serves (``app.privacy.presidio``, imported only then; a reload that keeps the same section keeps
the loaded scanner, and the scanners of the two latest configs are kept, so calls still
starting on the previous one have theirs). A call whose policy looks for its types scans on the
scanner's thread, off the event loop. Captured answers are scrubbed on the event loop, so there
the model is not run: the values it found in the request are looked for as they are.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from app import errors
from app.config import GatewayConfig
from app.inbound.anthropic import structured_output
from app.metrics.recorder import Recorder
from app.pipeline import ModelCall, ModelRequest, Slot, Stage
from app.privacy.config import PresidioConfig
from app.privacy.detect import Detector, Finding, ModelScanner, ScanBudget
from app.privacy.offsets import Prompts
from app.privacy.placeholders import Known, StreamRestorer, Vault
from app.privacy.policy import Policies
from app.privacy.scan import NOTHING_KNOWN, request_texts, scan_request
from app.privacy.stream import release, restore_answer, restore_chunk, restore_message
from app.privacy.walk import rewrite
from app.providers.base import Json, Result, Target
from app.routing import Route
from app.routing.table import FailClosed, narrowed_to
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest

if TYPE_CHECKING:
    from app.privacy.presidio import PresidioScanner

_T = TypeVar("_T")
_STATE = "privacy"
"""``ModelCall.extras`` key: this call's ``_State``."""
_PARAMS = {ChatRequest: "messages", CompletionRequest: "prompt", EmbeddingRequest: "input"}
_LOOP_SCAN_CHARS = 32 * 1024
"""A request with more text than this (characters, all its text parts) is scanned on a worker
thread (``asyncio.to_thread``): the built-in detectors cost up to ~0.7 s a MB of text made to
be expensive (digit groups, ``@``, colons: ``app.privacy.detect``), and the event loop gets the
GIL back every few milliseconds meanwhile, where a scan on it would hold it throughout."""
_KEPT_SCANNERS = 2
"""Presidio scanners kept: the serving config's and the one before (calls that took their
snapshot before a reload may still be on their way to this stage)."""


@dataclass(slots=True)
class _State:
    """What one call's scan found, and how to undo its redaction."""

    detector: Detector
    vault: Vault
    counts: dict[str, int]
    action: str
    restorer: StreamRestorer | None = None
    """Set when the request was redacted: answers get their values back."""
    scanned: dict[str, list[Finding]] = field(default_factory=dict)
    """The findings of each text part of the request that has any (``_scan``)."""
    known: Known = NOTHING_KNOWN
    """The values found in the request: looked for again in what is stored (``on_end``)."""
    unredacted: tuple[ModelRequest, Json] | None = None
    """Set when the request was redacted: the request and body as they were before (what a
    shadow copy of the call starts from)."""
    json_content: bool = False
    """The answer's content is a JSON document (JSON mode; a ``/v1/messages`` call's structured
    output): values go back into it escaped."""
    prompts: Prompts | None = None
    """A redacted completion's prompts with ``logprobs`` asked for: where the answer's
    ``text_offset``s count from (``app.privacy.offsets``)."""


async def _unless_gone(call: ModelCall, scan: Awaitable[_T]) -> _T:
    """``scan`` (off the event loop: seconds for MBs of text), given up with a 499
    (``ClientDisconnected``: the call recorded ``cancelled``) when the client disconnects
    first; the thread runs on to its end, its result dropped. The call's body has been read
    whole, so the next message of its channel can only be the disconnect. A shadow copy's
    channel is its original's client, who may have left since it was answered: not watched."""
    if call.record.shadow_of is not None:
        return await scan
    work = asyncio.ensure_future(scan)
    gone = asyncio.ensure_future(_disconnect(call))
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled meanwhile (shutdown): neither is awaited any more
        work.cancel()
        raise
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()
        raise errors.ClientDisconnected(
            "The client disconnected while its request was screened for sensitive data.")
    return work.result()


async def _disconnect(call: ModelCall) -> None:
    receive = call.incoming.receive
    while (await receive())["type"] != "http.disconnect":
        pass


class Privacy(Stage):
    slot = Slot.PRIVACY

    def __init__(self, *, recorder: Recorder | None = None) -> None:
        self._recorder = recorder
        self._compiled: tuple[GatewayConfig, Policies] | None = None
        self._scanners: dict[str, PresidioScanner] = {}
        """Loaded Presidio scanners by their config section (as JSON), the latest last."""

    async def prepare(self, config: GatewayConfig) -> None:
        """Load ``config``'s Presidio scanner, unless the one loaded for the same section is
        there; a pipeline that cannot be loaded refuses the config."""
        section = config.privacy.presidio
        if section is None:
            return
        key = section.model_dump_json()
        scanner = self._scanners.pop(key, None)
        if scanner is None:
            scanner = await _load_scanner(section)
        self._scanners[key] = scanner
        while len(self._scanners) > _KEPT_SCANNERS:
            self._scanners.pop(next(iter(self._scanners))).close()
            self._compiled = None  # its policies may hold the scanner just closed

    def policies(self, config: GatewayConfig) -> Policies:
        """The policies of ``config``, compiled once per config (a reload brings a new one)."""
        compiled = self._compiled
        if compiled is None or compiled[0] is not config:
            compiled = self._compiled = (config, Policies(config, model=self._scanner(config)))
        return compiled[1]

    def _scanner(self, config: GatewayConfig) -> ModelScanner | None:
        section = config.privacy.presidio
        if section is None:
            return None
        scanner = self._scanners.get(section.model_dump_json())
        if scanner is None:  # a config two reloads old, or one never prepared: fail closed
            raise errors.GatewayError(
                "The privacy policy's Presidio model for this config is not loaded (the config "
                "was replaced meanwhile); the request was not sent. Retry it.",
                status=503, code="privacy_model_unavailable")
        return scanner

    async def on_request(self, call: ModelCall) -> None:
        request, body = call.request, call.body
        if request is None or body is None:
            return
        policy = self.policies(call.snapshot.config).of(request.model,
                                                        tighten=call.caller.privacy)
        if policy.idle:
            return
        config = call.snapshot.config
        route = call.route()
        if policy.regions is not None:
            route = _in_regions(call, route, policy.regions, config)
        detector, native, budget = policy.detector, call.native, ScanBudget()
        if detector.model is None:
            walked = request_texts(body, native)
            if sum(map(len, walked[0])) <= _LOOP_SCAN_CHARS:
                found, counts, reserved, known = scan_request(
                    detector, body, native, budget=budget, walked=walked)
            else:
                found, counts, reserved, known = await _unless_gone(call, asyncio.to_thread(
                    scan_request, detector, body, native, budget=budget, walked=walked))
        else:
            found, counts, reserved, known = await _unless_gone(call, detector.model.offload(
                lambda: scan_request(detector, body, native, budget=budget)))
        action: str = policy.action
        if isinstance(request, EmbeddingRequest) and action == "redact" and any(
                _trust(config, t) != "private" for t in route.targets):
            # never redacted (another vector); all-private, the original goes, as under redact
            action = policy.embeddings
        if budget.exhausted and (action == "block" or (action == "redact" and any(
                _trust(config, t) != "private" for t in route.targets))):
            raise errors.BodyTooLarge(
                "The request holds more phone-number-shaped digit groups than this model's "
                "privacy policy checks in one request, so it could not be screened; it was "
                "not sent. Send the text in smaller requests.",
                param=_PARAMS.get(type(request)), code="privacy_scan_limit")
        state = _State(policy.detector, Vault(reserved), counts,
                       action if counts else "none", scanned=found, known=known)
        call.extras[_STATE] = state
        call.record.privacy_entities, call.record.privacy_action = counts, state.action
        if counts and self._recorder is not None:
            self._recorder.privacy_detected(counts, action)
        param = None if action == "allow" else _token_ids(request)
        if param is not None:
            whose = f"the privacy policy of model '{route.name}'" if self.policies(config).of(
                request.model).action == policy.action else \
                "the caller's privacy setting (its key's or team's)"
            route = _unscreened(call, route, state, action, param, config, whose=whose)
        if not counts:
            return
        if action == "block":
            raise errors.InvalidRequest(
                "The request contains sensitive data that this model's privacy policy does not "
                f"allow to be sent: {_named(counts)}.",
                param=_PARAMS.get(type(request)), code="sensitive_data_blocked")
        if action == "private_only":
            private = [t for t in route.targets if _trust(config, t) == "private"]
            if not private:
                raise errors.GatewayError(
                    f"The request contains sensitive data ({_named(counts)}) that may only go "
                    f"to a private target, and model '{route.name}' has none that can take it.",
                    status=503, code="no_private_target")
            route = narrowed_to(route, private, config, fail_closed=FailClosed(
                "no_private_target",
                f"The request contains sensitive data ({_named(counts)}) that may only go to a "
                f"private target, and none of the private targets of model '{route.name}' "
                f"({len(private)}) could take it now; it was not sent to any other target."))
            call.narrow(route)
        elif action == "redact" and any(_trust(config, t) != "private" for t in route.targets):
            _redact(call, state)

    async def on_shadow(self, original: ModelCall, copy: ModelCall) -> None:
        """A shadow copy runs under its original's policy, applied to the shadow variant's own
        targets: it starts from the body the client sent (not the original's redacted one) and
        goes through ``on_request``, so a third-party shadow gets placeholders where a private
        one gets the values, and under ``private_only`` a copy goes to the variant's private
        targets only (none: its row says ``no_private_target``). A blocked call is never
        answered, so never copied."""
        state: _State | None = original.extras.get(_STATE)
        if state is None:
            return  # the original's policy had nothing to do (idle), and so has the copy's
        if state.unredacted is not None:
            copy.request, copy.body = _unstreamed(*state.unredacted)
        await self.on_request(copy)

    def on_chunk(self, call: ModelCall, chunk: Json) -> Json | None:
        state: _State | None = call.extras.get(_STATE)
        if state is None or state.restorer is None:
            return chunk
        return restore_chunk(state.restorer, chunk, json_content=state.json_content,
                             prompts=state.prompts)

    def on_stream_end(self, call: ModelCall, base: Json) -> Json | None:
        """What the restorer still holds, however the stream ended (an upstream that ends
        without a ``finish_reason``, or fails midway): the tail of a text is never lost."""
        state: _State | None = call.extras.get(_STATE)
        if state is None or state.restorer is None:
            return None
        return release(state.restorer, base)

    def on_answer(self, call: ModelCall, result: Result) -> None:
        state: _State | None = call.extras.get(_STATE)
        if state is None or state.restorer is None:
            return
        result.body = restore_answer(state.vault, result.body, json_content=state.json_content,
                                     prompts=state.prompts)
        if result.native is not None:
            result.native = restore_message(state.vault, result.native,
                                            json_content=state.json_content)

    def on_end(self, call: ModelCall) -> None:
        state: _State | None = call.extras.get(_STATE)
        if state is None:
            return
        record = call.record
        detector, vault, known = state.detector, state.vault, state.known
        budget = ScanBudget()  # one for all that is stored
        if not state.counts:
            # The request id is no part of the request scanned (it is never sent): a value in
            # it is looked for on its own, by the built-in and custom detectors.
            if record.request_id is not None:
                found = detector.scan(record.request_id, model=False, budget=budget)
                if found:
                    record.request_id = vault.redact(record.request_id, found)
            return

        def scrub(text: str) -> str:
            found = state.scanned.get(text)
            if found is None:
                # The model is not run here: the request's values (its names too) are looked
                # for as they are, wherever an answer or an error repeats them.
                found = detector.scan(text, model=False, budget=budget)
                more = known.occurrences(text)
                if more:
                    found = detector.merge(found, more)
            return vault.redact(text, found)

        if record.request_body is not None:
            record.request_body = rewrite(record.request_body, scrub, blocks=True)
        if record.response_body is not None:
            record.response_body = rewrite(record.response_body, scrub, blocks=True)
        # The request's user and metadata were recorded as the client sent them (before a
        # block, or under private_only and allow, which send them as they are).
        if record.end_user is not None:
            record.end_user = scrub(record.end_user)
        if record.tags:
            record.tags = rewrite(record.tags, scrub)
        if record.error_message is not None:  # an upstream's error may quote the request
            record.error_message = scrub(record.error_message)
        if record.request_id is not None:
            record.request_id = scrub(record.request_id)


async def _load_scanner(section: PresidioConfig) -> PresidioScanner:
    """``app.privacy.presidio.load_scanner``, its module imported on a thread: importing
    Presidio and spaCy takes seconds, and happens only for a config that asks for them."""
    module = await asyncio.to_thread(importlib.import_module, "app.privacy.presidio")
    load: Callable[[PresidioConfig], Awaitable[PresidioScanner]] = module.load_scanner
    return await load(section)


def _redact(call: ModelCall, state: _State) -> None:
    """The call's body (and native body) with every found value replaced by its placeholder;
    the request re-read from the new body."""
    found, vault = state.scanned, state.vault

    def change(text: str) -> str:
        hits = found.get(text)
        return text if hits is None else vault.redact(text, hits)

    assert call.body is not None and call.request is not None
    state.unredacted = (call.request, call.body)
    call.body = rewrite(call.body, change)
    call.request = type(call.request).model_validate(call.body)
    if call.native is not None:
        call.native = rewrite(call.native, change)
    state.restorer = StreamRestorer(vault)
    state.json_content = (isinstance(call.request, ChatRequest) and call.request.wants_json()) \
        or structured_output(call.native)
    request = call.request
    if isinstance(request, CompletionRequest) and request.logprobs is not None:
        state.prompts = Prompts(tuple(request.prompt_texts()), request.n or 1,
                                request.echo is True)


def _unstreamed(request: ModelRequest, body: Json) -> tuple[ModelRequest, Json]:
    """``request`` and ``body`` as a shadow copy sends them: a copy never streams
    (``Gateway._shadow``), so without ``stream`` and ``stream_options``."""
    if isinstance(request, EmbeddingRequest) or not request.stream:
        return request, body
    request = request.model_copy(update={"stream": False, "stream_options": None})
    return request, {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


def _token_ids(request: ModelRequest) -> str | None:
    """The field of ``request`` given as token ids, which no detector can read: an
    embedding's ``input`` or a completion's ``prompt`` (``None``: every input is text)."""
    if isinstance(request, EmbeddingRequest):
        value, param = request.input, "input"
    elif isinstance(request, CompletionRequest):
        value, param = request.prompt, "prompt"
    else:
        return None
    return param if isinstance(value, list) and value and not isinstance(value[0], str) \
        else None


def _unscreened(call: ModelCall, route: Route, state: _State, action: str, param: str,
                config: GatewayConfig, *, whose: str) -> Route:
    """``route`` for a call under ``action`` (not ``allow``) whose ``param`` is token ids
    (``_token_ids``), which the gateway cannot screen: they may go to private targets only.
    Under ``private_only`` the route is narrowed to its private targets; under ``redact`` and
    ``block`` (nothing to redact, nothing known to block) a route with a third-party target is
    refused, 400 ``token_ids_not_screened``, as is a ``private_only`` route without a private
    target. The row says ``block`` for a refusal, and ``private_only`` for a call sent (where
    the text parts found nothing; otherwise their action). ``whose`` names where the action
    came from: the model's policy, or the caller's key or team setting that tightened it."""
    private = [t for t in route.targets if _trust(config, t) == "private"]
    if not private or (action != "private_only" and len(private) < len(route.targets)):
        call.record.privacy_action = state.action = "block"
        hint = " (LangChain's OpenAIEmbeddings sends token ids unless created with " \
            "check_embedding_ctx_length=False)" if param == "input" else ""
        raise errors.InvalidRequest(
            f"The request's '{param}' is token ids, which the gateway cannot screen for "
            f"sensitive data: under {whose} they may only go to a "
            f"private target, and model '{route.name}' "
            f"{'has none' if not private else 'may send them to a third-party one'}. Send the "
            f"{param} as text{hint}.", param=param, code="token_ids_not_screened")
    if state.action == "none":
        call.record.privacy_action = state.action = "private_only"
    if len(private) == len(route.targets):
        return route
    route = narrowed_to(route, private, config, fail_closed=FailClosed(
        "no_private_target",
        f"The request's '{param}' is token ids, which the gateway cannot screen, so they may "
        f"only go to a private target, and none of the private targets of model '{route.name}' "
        f"({len(private)}) could take them now; they were not sent to any other target."))
    call.narrow(route)
    return route


def _trust(config: GatewayConfig, target: Target) -> str:
    return config.providers[target.provider].trust


def _in_regions(call: ModelCall, route: Route, regions: frozenset[str],
                config: GatewayConfig) -> Route:
    """``route`` narrowed to the targets whose provider runs in one of ``regions``."""
    allowed = [t for t in route.targets if config.providers[t.provider].region in regions]
    if not allowed:
        raise errors.GatewayError(
            f"Model '{route.name}' has no target in the regions its privacy policy allows "
            f"({', '.join(sorted(regions))}).", status=503, code="no_target_in_region")
    if len(allowed) < len(route.targets):
        route = narrowed_to(route, allowed, config)
        call.narrow(route)
    return route


def _named(counts: dict[str, Any]) -> str:
    return ", ".join(f"{entity} ({n})" for entity, n in sorted(counts.items()))
