"""Rate limits and budgets per virtual key, team and public model (``Limiter``): in Redis,
holding across processes and replicas (``RedisLimiter``), or in this process (``LocalLimiter``).
The model, its maths and guarantees: ``app.limits.model``; the Redis key layout:
``app.limits.redis``; rebuilding spend counters from the call log: ``app.limits.budget``;
carrying a key's or team's spend to the counters a change moves its calls to:
``app.limits.carry``."""

from app.limits.headers import Header
from app.limits.local import LocalLimiter
from app.limits.model import ADMITTED, Bucket, Decision, Limiter
from app.limits.redis import RedisLimiter

__all__ = ["ADMITTED", "Bucket", "Decision", "Header", "Limiter", "LocalLimiter", "RedisLimiter"]
