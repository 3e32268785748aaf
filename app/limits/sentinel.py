"""``SentinelRespClient``: the limiter's own client (``app.limits.resp``) for a Redis whose
master is chosen by Redis Sentinel (``redis+sentinel://``, parsed by ``app.sentinel_url``).

Every (re)connection first asks the sentinels, in turn, ``SENTINEL get-master-addr-by-name
<master>`` (the same RESP encoder, one short-lived connection per sentinel kept for the next
ask; the sentinel that answered is asked first next time), connects to that address with the
URL's login, database and TLS, and checks with ``ROLE`` that the node is a master (a sentinel
may still name a demoted one for a moment). The connection is then used exactly as a plain
``RespClient``'s, and dropped, so that the next round trip resolves the master again, when:

- it fails (lost, unanswered for ``reply_timeout_s``): ``RespClient`` already drops it;
- a reply of a round trip is ``-READONLY`` (the node was demoted to a replica by a failover
  while the connection stayed open). That round trip's answer stays as it is (the limiter
  decides it by its fail mode); the next one goes to the new master.

The plain ``redis://`` client (``RespClient``) is untouched by this: the check of replies for
``READONLY`` wraps each round trip's answer in this class only.
"""

from __future__ import annotations

import asyncio
from functools import partial

from app.limits.resp import Address, Answer, ReplyError, RespClient, _Wire, encode
from app.sentinel_url import SentinelUrl


class SentinelRespClient(RespClient):
    """``RespClient`` that follows the master named by Sentinel (see the module docstring)."""

    def __init__(self, url: SentinelUrl, *, connect_timeout_s: float = 1.0,
                 reply_timeout_s: float = 1.0) -> None:
        super().__init__(Address(), connect_timeout_s=connect_timeout_s,
                         reply_timeout_s=reply_timeout_s)
        self.url = url
        self._sentinels: list[RespClient] = [
            RespClient(Address(host=host, port=port, username=url.sentinel_username,
                               password=url.sentinel_password),
                       connect_timeout_s=connect_timeout_s, reply_timeout_s=reply_timeout_s)
            for host, port in url.sentinels]
        self.resolved: tuple[str, int] | None = None
        """The master's address as last resolved (``None`` before the first connection)."""

    def send_then(self, payload: bytes, count: int, answer: Answer) -> None:
        super().send_then(payload, count, partial(self._watch, self._wire, answer))

    def _watch(self, wire: _Wire | None, answer: Answer,
               result: list[object] | BaseException) -> None:
        """Drop the connection a ``-READONLY`` reply came on (the master moved), then hand the
        replies on."""
        try:
            self._drop_if_readonly(wire, result)
        finally:
            answer(result)

    def _drop_if_readonly(self, wire: _Wire | None, result: list[object] | BaseException) -> None:
        if isinstance(result, BaseException):
            return  # a failed connection is dropped already; the next one resolves again
        if not any(isinstance(r, ReplyError) and r.code == "READONLY" for r in result):
            return
        current = self._wire
        if current is not None and (wire is None or current is wire):
            current.abort(ConnectionError("the Redis master became a replica (failover)"))
            self._wire = None

    async def resolve(self) -> tuple[str, int]:
        """The master's address as the first sentinel that knows it says; ``ConnectionError``
        when none answers."""
        reasons: list[str] = []
        for sentinel in list(self._sentinels):
            try:
                reply = (await sentinel.execute(
                    [("SENTINEL", "get-master-addr-by-name", self.url.master)]))[0]
            except (OSError, TimeoutError) as exc:
                reasons.append(f"{_name(sentinel)}: {type(exc).__name__}")
                continue
            if (isinstance(reply, list) and len(reply) == 2
                    and all(isinstance(part, bytes) for part in reply)):
                host, port = (part.decode() for part in reply if isinstance(part, bytes))
                if sentinel is not self._sentinels[0]:  # ask the one that knows first next time
                    self._sentinels.remove(sentinel)
                    self._sentinels.insert(0, sentinel)
                return host, int(port)
            reasons.append(f"{_name(sentinel)}: "
                           + (reply.code if isinstance(reply, ReplyError) else "unknown master"))
        raise ConnectionError(f"no sentinel named the master {self.url.master!r} "
                              f"({'; '.join(reasons)})")

    async def _connect(self) -> _Wire:
        host, port = await self.resolve()
        self.address = Address.parse(self.url.node_url(host, port))
        wire = await super()._connect()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                role = (await wire.send(encode([("ROLE",)]), 1))[0]
        except TimeoutError:
            wire.abort(TimeoutError("ROLE unanswered"))
            raise TimeoutError("the Redis master did not answer ROLE in time") from None
        if not (isinstance(role, list) and role and role[0] == b"master"):
            wire.abort(ConnectionError("not a master"))
            raise ConnectionError(f"the sentinels' master {host}:{port} is not a master (yet)")
        self.resolved = (host, port)
        return wire

    async def aclose(self) -> None:
        await super().aclose()
        for sentinel in self._sentinels:
            await sentinel.aclose()


def _name(client: RespClient) -> str:
    return f"{client.address.host}:{client.address.port}"

