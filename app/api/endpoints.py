"""Every model-call endpoint by path, whatever its dialect: what the fast lane serves and the
admission limit refuses as a call."""

from __future__ import annotations

from app.api import messages, v1
from app.api.calls import Endpoint

MODEL_CALLS: dict[str, Endpoint] = {**v1.MODEL_CALLS, "/v1/messages": messages.MESSAGES}
