"""The call log: one canonical record per client request, and where records go."""

from app.calllog.record import Attempt, CallRecord, CallSink, LogSink

__all__ = ["Attempt", "CallRecord", "CallSink", "LogSink"]
