"""The request pipeline: the one way in for every model call, whatever its endpoint or dialect.

Every model call runs these steps, in this order::

    authenticate -> prompt template -> privacy -> admit -> [cache] -> route and call
                 -> account -> record

The step in brackets is a slot no stage fills yet (``Slot.CACHE``). "Route and call" is the
gateway's own core (``app.gateway``): resolve the public model, try its targets, compute usage
and cost. "Record" is the call's owner (``ModelCall``): exactly one finish per call, whatever
happened, its record sealed (``Pipeline.seal``) before the call log gets it. Everything else is
a ``Stage``, placed by its ``slot``; a new stage slots in without touching the others.

A stage may act at eight points, each a hook it overrides (a hook it does not override is never
called, so a stage that does nothing for a call costs nothing there):

- ``on_headers``: before the body is read (authentication: a caller without a key costs no parse);
- ``on_body``: on a chat request's JSON object before it is validated, in slot order; may
  rewrite it in place (prompt templates expand here, so the request validated, authorised and
  admitted is the expanded one), or reject by raising a ``GatewayError``;
- ``on_request``: on the parsed request, in slot order; may rewrite ``call.request`` and
  ``call.body``, add response ``headers``, or reject by raising a ``GatewayError``;
- ``on_chunk``: on each streamed chunk before it goes to the client; returns the chunk to send
  (rewritten or not) or ``None`` to send nothing for it;
- ``on_stream_end``: once a stream's upstream has ended (after its last chunk, or failing after
  chunks went out), before the gateway's closing chunks (a usage chunk the upstream sent is held
  until then): returns one more chunk to send (what a stage still held back) or ``None``;
- ``on_answer``: on a unary answer before it goes to the client; may rewrite it;
- ``on_end``: once, when the call ends however it ended (answered, failed, rejected, client gone),
  before the record is handed to the call log; ``call.record`` then says how it ended;
- ``on_shadow``: on a shadow copy of an answered call (``app.routing.experiments``) before it is
  sent: the copy does not run ``on_request`` (it is not admitted: it charges no limits), so a
  stage whose rule binds everything sent upstream (privacy) applies it to the copy here; may
  rewrite the copy, or reject it by raising a ``GatewayError`` (recorded in the copy's row).

One more hook acts on a config rather than a call: ``prepare``, before a config serves its first
call (at start-up, and on each reload before the swap), to load what the config names (the
privacy stage's Presidio model); its ``GatewayError`` refuses the config.

Each call runs on one immutable ``Snapshot`` (config and its version, routing table, providers,
prices, pipeline, limits) taken when it starts; swapping the gateway's snapshot (a live reload)
changes later calls, never a running one.

Glossary (the names the code uses):

- *model call*: one client request to a model endpoint; ``ModelCall`` while it runs;
- *call record*: what the call log stores of it (``app.calllog.CallRecord``); its ``end_user``
  and ``tags`` are the request's ``user`` and ``metadata``;
- *caller*: who made it (``Caller``): the master key, a virtual key (and its team), or anonymous;
- *recorder*: the per-call metrics (``app.metrics.recorder.Recorder``);
- *redactor*: what removes secrets from captured bodies (``app.calllog.redact.Redactor``);
- *call-log writer*: the process's queue to the store and spools (``CallLogWriter``);
- *bucket*, *admission*, *settle*, *limiter*: the limits a call is charged to, charging them
  before it runs (``app.stages.admit.Admit``), correcting them when it ends (``Account``), and
  what keeps the counters (``app.limits``); an *admission credit* is a few requests charged
  ahead, admitted by the process on its own, its *tally* what its calls spent and used, settled
  as one when it ends, and *budget news* the pub/sub message on which processes give back the
  credits of callers with a budget (``app.limits.model``).

(Over 400 lines: the stage seam, the pipeline that runs the stages and seals each record, and
the snapshot and call they act on, one call's life in one place.)
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Protocol, runtime_checkable

from app import errors
from app.api.incoming import Incoming
from app.calllog import CallRecord
from app.config import GatewayConfig, Limits
from app.limits import Bucket, Header
from app.pricing import PriceBook
from app.privacy.config import Action
from app.privacy.placeholders import Vault, reserved_in
from app.privacy.policy import Policies
from app.privacy.scan import scan_texts
from app.providers.base import Json, MintsCredentials, Provider, Result
from app.routing import Route, RoutingTable
from app.routing.experiments import VARIANT_KEY_HEADER, Experiment, Variant
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from app.scrub import Minted, OwnKeys, Scrubber, config_secrets

ModelRequest = ChatRequest | CompletionRequest | EmbeddingRequest


class Slot(enum.IntEnum):
    """Where a stage runs; stages run in ascending slot order. Route and call sits between
    ``CACHE`` and ``ACCOUNT``."""

    AUTHENTICATE = 10
    TEMPLATE = 20
    PRIVACY = 30
    ADMIT = 40
    CACHE = 50
    ACCOUNT = 70


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a call. ``name`` is what the call record stores as ``caller``: ``master``,
    ``anonymous`` (loopback-only mode), ``key`` (a virtual key: ``key_id``, maybe ``team_id``)."""

    name: str
    key_id: str | None = None
    team_id: str | None = None
    admin: bool = False
    models: frozenset[str] | None = None
    """The public models this caller may use; ``None``: all."""
    buckets: tuple[Bucket, ...] = ()
    """The rate limits and budgets its calls are charged to (key's, then team's)."""
    largest_call: int | None = field(init=False, default=None)
    """The most tokens one call is charged: the smallest TPM limit among ``buckets`` (``None``:
    no TPM limit). A call asking for more can never fit (``app.stages.admit``)."""
    privacy: Action = "allow"
    """The least strict privacy action its calls run under: the stricter of its key's and its
    team's ``privacy`` settings (``allow``: neither has one). It tightens a model's policy,
    never loosens it (``app.privacy.policy``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "largest_call",
                           min((b.tpm for b in self.buckets if b.tpm), default=None))


MASTER = Caller("master", admin=True)
ANONYMOUS = Caller("anonymous", admin=True)


class Stage:
    """A pipeline stage. Subclasses set ``slot`` and override the hooks they need."""

    slot: ClassVar[Slot]
    own_keys: tuple[str, ...] = ()
    """The gateway's own credentials this stage checks callers' keys against (the master
    key): no call record stores them (``Pipeline.seal``)."""

    async def on_headers(self, call: ModelCall) -> None:
        """Before the body is read: only ``call.incoming.headers`` is known."""

    async def on_body(self, call: ModelCall, body: Json) -> None:
        """On a chat request's JSON object, before it is validated into ``call.request``."""

    async def on_request(self, call: ModelCall) -> None:
        """On the parsed request (``call.request``, ``call.body``)."""

    def on_chunk(self, call: ModelCall, chunk: Json) -> Json | None:
        """Each streamed chunk on its way to the client; the chunk to send, or ``None``."""
        return chunk

    def on_stream_end(self, call: ModelCall, base: Json) -> Json | None:
        """Once the stream's upstream has ended: one more chunk to send, built on ``base`` (the
        stream's ``id``, ``object``, ``created`` and ``model``), or ``None``."""
        return None

    def on_answer(self, call: ModelCall, result: Result) -> None:
        """On a unary answer before it goes to the client; may rewrite ``result.body`` and
        ``result.native``."""

    def on_end(self, call: ModelCall) -> None:
        """Once, when the call has ended; must not raise."""

    async def on_shadow(self, original: ModelCall, copy: ModelCall) -> None:
        """On ``copy``, a shadow copy of the answered call ``original`` (same caller, request
        and body; its route the shadow variant's), before it is sent."""

    async def prepare(self, config: GatewayConfig) -> None:
        """Before ``config`` serves a call: at start-up, and on a reload before the swap (the
        old config serves meanwhile). May load what it names, off the event loop; a
        ``GatewayError`` refuses it (the gateway does not start; a reload keeps the old)."""


def _overrides(stage: Stage, hook: str) -> bool:
    return getattr(type(stage), hook) is not getattr(Stage, hook)


@runtime_checkable
class Screens(Protocol):
    """A stage that knows each call's privacy policy (``app.stages.privacy``): what
    ``Pipeline.seal`` screens a request's strings with when that stage never scanned them."""

    def policies(self, config: GatewayConfig) -> Policies: ...


class Pipeline:
    """Stages in slot order, with each hook's list computed once (a hook no stage overrides
    costs one empty-tuple check per call)."""

    def __init__(self, stages: Sequence[Stage] = ()) -> None:
        self.stages = tuple(sorted(stages, key=lambda s: s.slot))
        self.header_hooks: tuple[Callable[[ModelCall], Awaitable[None]], ...] = tuple(
            s.on_headers for s in self.stages if _overrides(s, "on_headers"))
        self.body_hooks: tuple[Callable[[ModelCall, Json], Awaitable[None]], ...] = tuple(
            s.on_body for s in self.stages if _overrides(s, "on_body"))
        self.request_hooks: tuple[Callable[[ModelCall], Awaitable[None]], ...] = tuple(
            s.on_request for s in self.stages if _overrides(s, "on_request"))
        self.chunk_hooks: tuple[Callable[[ModelCall, Json], Json | None], ...] = tuple(
            s.on_chunk for s in self.stages if _overrides(s, "on_chunk"))
        self.stream_end_hooks: tuple[Callable[[ModelCall, Json], Json | None], ...] = tuple(
            s.on_stream_end for s in self.stages if _overrides(s, "on_stream_end"))
        self.end_hooks: tuple[Callable[[ModelCall], None], ...] = tuple(
            s.on_end for s in self.stages if _overrides(s, "on_end"))
        self.answer_hooks: tuple[Callable[[ModelCall, Result], None], ...] = tuple(
            s.on_answer for s in self.stages if _overrides(s, "on_answer"))
        self.shadow_hooks: tuple[Callable[[ModelCall, ModelCall], Awaitable[None]], ...] = \
            tuple(s.on_shadow for s in self.stages if _overrides(s, "on_shadow"))
        self.scrub_keys = OwnKeys(k for s in self.stages for k in s.own_keys)
        """Scrubs the gateway's own keys from what a record stores (``seal``)."""
        self._screens = next((s for s in self.stages if isinstance(s, Screens)), None)

    async def arrive(self, call: ModelCall) -> None:
        """The ``on_headers`` hooks, in slot order."""
        for hook in self.header_hooks:
            await hook(call)

    async def expand(self, call: ModelCall, body: Json) -> None:
        """The ``on_body`` hooks, in slot order (chat requests only)."""
        for hook in self.body_hooks:
            await hook(call, body)

    async def admit(self, call: ModelCall) -> None:
        """The ``on_request`` hooks, in slot order, after the call record takes what the parsed
        request says of the call: its public model (only one the snapshot serves: names a
        client makes up must not become label values or counter keys), its end user and
        metadata, and whether it streams. So a call a stage refuses (403, 429, a privacy
        block) is recorded with them too (as ``seal`` leaves them); the gateway records them
        again when it routes the call."""
        request = call.request
        if request is not None:
            record = call.record
            if call.snapshot.table.serves(request.model):
                record.public_model = request.model
            record.end_user = request.user
            if isinstance(request, ChatRequest):
                record.tags = request.metadata
            record.stream = not isinstance(request, EmbeddingRequest) and bool(request.stream)
        for hook in self.request_hooks:
            await hook(call)

    def seal(self, call: ModelCall) -> None:
        """Make ``call``'s record fit to store, once its ``on_end`` hooks have run and before
        the metrics and the call log get it (``Gateway.finish``); never raises.

        A call that did not end ``ok`` may have been refused before the privacy stage scanned
        its request (a 403, a 404, a template's or a parse's 400): its request id, end user,
        tags, error message (which may quote the request's model) and a model no route serves
        (stored as named, ``public_model``) are screened then with the call's
        policy (``_screen``), as the privacy stage's ``on_end`` does for a call it scanned. An
        answered call went through that stage, so nothing is left to screen (no cost on that
        path). Then the gateway's own keys are scrubbed from every string the client chose
        that the record stores (``OwnKeys``): a key sent as ``model`` is quoted by the 404,
        and stored as its ``public_model``."""
        record = call.record
        if (record.status != "ok" and record.privacy_action is None
                and self._screens is not None):
            _screen(call, self._screens)
        own = self.scrub_keys
        record.rewrite_quoted(own)
        if record.public_model is not None:  # a model no route serves is stored as named
            record.public_model = own(record.public_model)

    def screens(self, call: ModelCall) -> bool:
        """Whether ``call``'s privacy policy screens its request (not idle; also when the
        policy cannot be known): the gateway then stores no body of it the privacy stage did
        not see (``Gateway._capture_refused``)."""
        if self._screens is None:
            return False
        named = call.request.model if call.request is not None else call.record.public_model
        try:
            policy = self._screens.policies(call.snapshot.config).of(
                named or "", tighten=call.caller.privacy)
        except errors.GatewayError:
            return True
        return not policy.idle

    async def shadow(self, original: ModelCall, copy: ModelCall) -> None:
        """The ``on_shadow`` hooks, in slot order."""
        for hook in self.shadow_hooks:
            await hook(original, copy)

    async def prepare(self, config: GatewayConfig) -> None:
        """The ``prepare`` hooks, in slot order."""
        for stage in self.stages:
            if _overrides(stage, "prepare"):
                await stage.prepare(config)


def _screen(call: ModelCall, screens: Screens) -> None:
    """``call``'s request id, end user, tags and error message, which the privacy stage never
    scanned,
    screened with its policy as that stage would have: each value found replaced by its
    placeholder (``Vault``), wherever else it appears among them too (``scan_texts``). Nothing
    when the policy is idle (the values would have been kept as they are). Under a policy that
    also runs a Presidio model (on its own thread, which a refused call is not kept waiting
    for), the end user and tags are not kept at all (a name only the model finds would be),
    and the error message is screened by the built-in and custom detectors, as the stage
    screens an upstream's."""
    record = call.record
    named = record.public_model
    unknown = named is not None and not call.snapshot.table.serves(named)  # client text
    if record.end_user is None and not record.tags and record.error_message is None \
            and record.request_id is None and not unknown:
        return
    model = call.request.model if call.request is not None else named or ""
    try:
        policy = screens.policies(call.snapshot.config).of(model, tighten=call.caller.privacy)
    except errors.GatewayError:  # its Presidio model is gone (the config was replaced):
        record.end_user, record.tags = None, None  # nothing can screen them
        return
    if policy.idle:
        return
    detector = policy.detector
    if detector.model is not None:
        record.end_user, record.tags = None, None
    tags = record.tags or {}
    strings = [text for text in (record.request_id, record.end_user, record.error_message,
                                 *tags, *tags.values())
               if type(text) is str and text]
    if unknown and named:  # stored as named: screened as the error message that quotes it
        strings.append(named)
    found = scan_texts(detector, strings, model=False)  # every copy of a value found once
    vault = Vault(reserved_in(strings))

    def screened(text: str) -> str:
        hits = found.get(text)
        return vault.redact(text, hits) if hits else text

    record.rewrite_quoted(screened)
    if unknown and named:
        record.public_model = screened(named)


@dataclass(slots=True)
class InFlight:
    """Calls running on one snapshot (the gateway closes a replaced snapshot's providers once
    its count is back to zero)."""

    calls: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one call runs on from start to end: a call keeps the snapshot it started with, so
    a live reload (``app.reload``, ``Gateway.swap``) changes later calls only, and a stream
    that began on the old config finishes on it."""

    version: str
    """A hash of the config: which config served a call (``CallRecord.config_version``)."""
    config: GatewayConfig
    table: RoutingTable
    limits: Limits
    keepalive_s: float
    pipeline: Pipeline
    providers: Mapping[str, Provider]
    """The providers by name (one object shared by every snapshot whose config of it is the
    same, so its connection pool outlives a reload that did not change it)."""
    prices: PriceBook
    scrubber: Scrubber
    """Scrubs every credential of this config's providers from upstream errors: the configured
    ones and those the providers minted (``MintsCredentials``), read when an error is scrubbed."""
    in_flight: InFlight = field(default_factory=InFlight, compare=False)

    @classmethod
    def build(cls, config: GatewayConfig, pipeline: Pipeline,
              providers: Mapping[str, Provider], prices: PriceBook, *,
              previous: Snapshot | None = None) -> Snapshot:
        """The snapshot of ``config``; ``previous``: the one it replaces on a reload (the models
        both serve keep their ``created`` time)."""
        table = RoutingTable(config, previous=None if previous is None else previous.table)
        return cls(version=config_version(config), config=config, table=table,
                   limits=config.limits, keepalive_s=config.streaming.keepalive_s,
                   pipeline=pipeline, providers=providers, prices=prices,
                   scrubber=Scrubber(config_secrets(config.providers.values()),
                                     minted=minted_sources(providers)))


def minted_sources(providers: Mapping[str, Provider]) -> tuple[Minted, ...]:
    """The ``minted_credentials`` of the providers that obtain credentials at run time."""
    return tuple(p.minted_credentials for p in providers.values()
                 if isinstance(p, MintsCredentials))


def config_version(config: GatewayConfig) -> str:
    """The version of a config: 12 hex characters of a hash of its validated content, secrets
    included (pydantic writes them as stars), so a rotated key is a new version."""
    digest = hashlib.sha256(config.model_dump_json().encode())
    for name, provider in sorted(config.providers.items()):
        digest.update(b"\0" + name.encode())
        for secret in sorted(config_secrets([provider])):
            digest.update(b"\0" + secret.encode())
    return digest.hexdigest()[:12]


class Finisher:
    """What a ``ModelCall`` reports to when it ends (the gateway)."""

    def fail(self, call: ModelCall, exc: errors.GatewayError) -> None:
        raise NotImplementedError

    def finish(self, call: ModelCall) -> None:
        raise NotImplementedError


@dataclass(slots=True, eq=False)
class ModelCall:
    """One model call in flight, and the owner of its record: used as ``async with call:``, it
    finishes the record exactly once (rejections, failures and disconnects included); a stream
    that has started finishes it itself when it ends (``streaming``).

    Leaving the block with a ``GatewayError`` records that error (scrubbed of secrets) and
    re-raises it; with a cancellation, a 499; with any other exception, a 500."""

    incoming: Incoming
    record: CallRecord
    snapshot: Snapshot
    owner: Finisher
    request_id: str | None = None
    """The client's ``x-request-id`` as it sent it (``app.api.incoming.client_request_id``):
    what its answer's ``x-request-id`` echoes. The record's ``request_id`` is what is stored
    (screened by the call's privacy policy: ``Pipeline.seal``)."""
    caller: Caller = ANONYMOUS
    request: ModelRequest | None = None
    body: Json | None = None
    headers: list[Header] = field(default_factory=list)
    """Response headers stages add (the rate-limit headers), on answers and errors alike, as
    the server writes them (lower-case names, latin-1 bytes): a keyed call carries six, and
    encoding them per call showed in its CPU (``app.limits.headers``)."""
    tokens: int = 0
    """The tokens admission charged for this call before it ran (prompt + reserved output)."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Per-call state of stages, each under its own key."""
    native: Json | None = None
    """The client's own body when the call came in in a dialect some providers speak natively
    (Anthropic's Messages API): those targets get it untranslated, the others ``body``. A stage
    that rewrites the request rewrites both."""
    native_only: list[str] = field(default_factory=list)
    """The parts of ``native`` that only a native target can serve (``app.inbound``)."""
    streaming: bool = False
    finished: bool = False
    _route: Route | None = None

    def route(self) -> Route:
        """The route of the requested public model (resolved once); ``NotFound`` if none. For a
        model an experiment splits, the route of the variant this call is assigned to (and the
        record says which)."""
        if self._route is None:
            assert self.request is not None, "no route before the request is parsed"
            table = self.snapshot.table
            try:
                route = table.resolve(self.request.model)
            except errors.ModelNotFound:
                # stored as named, whichever part asked first (a stage before ``_begin``: the
                # admission of a key with limits, a privacy policy)
                self.record.public_model = self.request.model
                raise
            experiment = table.experiment_of(route.name)
            if experiment is not None:
                variant = self.variant_of(experiment, user=getattr(self.request, "user", None))
                self.record.experiment, self.record.variant = experiment.name, variant.name
                route = variant.route
            self._route = route
        return self._route

    def variant_of(self, experiment: Experiment, *, user: str | None) -> Variant:
        """The variant of ``experiment`` this call is assigned to, by the experiment's sticky
        key (``user``: the request's ``user``, which a stage that runs before the request is
        parsed reads from the body). Records nothing: ``route()`` and ``pin`` do."""
        return experiment.assign(self._sticky_key(experiment.sticky, user))

    def narrow(self, route: Route) -> None:
        """Serve this call from ``route``: its own route (``route()``, resolved first) with
        fewer targets (a stage's policy: ``app.stages.privacy``)."""
        self._route = route

    def pin(self, route: Route, *, experiment: str, variant: str) -> None:
        """Serve this call from ``route``, an experiment's variant (a shadow copy's)."""
        self._route = route
        self.record.experiment, self.record.variant = experiment, variant

    def _sticky_key(self, sticky: str, user: str | None) -> str:
        """What assigns this call to a variant; its own id (at random) when it has none. A call
        without a virtual key (the master key's, loopback-only mode's) has no ``key`` to stick
        by: hashing the caller's name would put every master-key call on one variant."""
        if sticky == "user":
            key = user
        elif sticky == "key":
            key = self.caller.key_id
        else:
            key = self.incoming.headers.get(VARIANT_KEY_HEADER)
        return f"{sticky}:{key}" if key else f"call:{self.record.id}"

    async def __aenter__(self) -> ModelCall:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.finished:
            return
        if exc is None:
            if self.streaming:
                return  # the stream finishes the record when it ends
        elif isinstance(exc, errors.GatewayError):
            self.owner.fail(self, exc)
        elif isinstance(exc, Exception):
            self.owner.fail(self, errors.GatewayError("The gateway had an internal error."))
        else:  # cancelled: the client left, or the server is shutting down
            self.record.status, self.record.http_status = "cancelled", 499
        self.owner.finish(self)
