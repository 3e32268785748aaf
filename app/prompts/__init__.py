"""Versioned prompt templates: stored versions (``store``), rendering by plain substitution
(``render``), what a request's ``prompt`` field becomes (``app.stages.template``)."""

from app.prompts.model import (
    CompiledVersion,
    LabelEvent,
    TemplateCreate,
    TemplateRecord,
    VersionRecord,
    VersionSpec,
)
from app.prompts.store import PromptStore

__all__ = ["CompiledVersion", "LabelEvent", "PromptStore", "TemplateCreate", "TemplateRecord",
           "VersionRecord", "VersionSpec"]
