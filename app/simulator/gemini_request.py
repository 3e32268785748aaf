"""Validation of a ``GenerateContentRequest`` (Gemini API and Vertex AI), as Google validates it.

Unknown fields are refused the way Google's JSON transcoder refuses them (400
``INVALID_ARGUMENT``, ``Invalid JSON payload received. Unknown name "x" at 'y': Cannot find
field.``). Checked: ``contents`` (a non-empty list of ``{role: user|model, parts}``; each part
exactly one of text, inlineData, fileData, functionCall, functionResponse, executableCode,
codeExecutionResult, plus ``thought``/``thoughtSignature``), ``systemInstruction``, ``tools``'
``functionDeclarations`` (a name each, ``FunctionDeclaration``'s fields only; ``parameters``
and ``parametersJsonSchema`` not both), ``toolConfig.functionCallingConfig`` (mode AUTO, ANY,
NONE or VALIDATED; allowed names only with ANY or VALIDATED), inline images' MIME types
(``IMAGE_TYPES``), ``generationConfig``'s field names and ranges, and function call and response
``id`` s (refused on Vertex's v1, which has no such field; on the Gemini API a response's must
name a call of the model turn before it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.simulator import content
from app.simulator.asgi import SimError
from app.simulator.tools import matching

REQUEST_FIELDS = frozenset({"contents", "systemInstruction", "tools", "toolConfig",
                            "generationConfig", "safetySettings", "cachedContent", "labels",
                            "model", "serviceTier", "store"})
GENERATION_FIELDS = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "_responseJsonSchema", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK",
    "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
    "enableEnhancedCivicAnswers", "responseModalities", "speechConfig", "thinkingConfig",
    "imageConfig", "mediaResolution", "audioTimestamp", "routingConfig", "modelSelectionConfig",
    "enableAffectiveDialog"})
THINKING_FIELDS = frozenset({"includeThoughts", "thinkingBudget", "thinkingLevel"})
PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse",
             "executableCode", "codeExecutionResult")
PART_FIELDS = frozenset({*PART_DATA, "thought", "thoughtSignature", "videoMetadata",
                         "mediaResolution", "partMetadata"})
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
"""The image MIME types Gemini reads (Google's image-understanding pages); another image type,
``image/jpg`` included, is its 400 "Unsupported MIME type"."""
MODES = ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")
DECLARATION_FIELDS = frozenset({"name", "description", "behavior", "parameters",
                                "parametersJsonSchema", "response", "responseJsonSchema"})
"""``FunctionDeclaration``'s fields (google-genai's types, Google's API reference): no
``strict``."""


def invalid(message: str) -> SimError:
    return SimError(400, message, kind="INVALID_ARGUMENT")


def _unknown(value: dict[str, Any], known: frozenset[str], where: str) -> None:
    for key in value:
        if key not in known:
            raise invalid(f'Invalid JSON payload received. Unknown name "{key}" at '
                          f"'{where}': Cannot find field.")


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """What the simulator needs of a valid request."""

    contents: list[dict[str, Any]]
    system: str
    config: dict[str, Any]
    tool: dict[str, Any] | None
    """The function the answer calls, if any (``_tool``)."""
    prompt_tokens: int

    @property
    def topic(self) -> str:
        return content.topic_of(user_text(self.contents))

    @property
    def limit(self) -> int | None:
        value = self.config.get("maxOutputTokens")
        return value if isinstance(value, int) else None

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple(self.config.get("stopSequences") or ())

    @property
    def candidates(self) -> int:
        value = self.config.get("candidateCount")
        return value if isinstance(value, int) else 1

    @property
    def json_schema(self) -> dict[str, Any] | None:
        for key in ("responseJsonSchema", "_responseJsonSchema", "responseSchema"):
            if isinstance(self.config.get(key), dict):
                return dict(self.config[key])
        return None

    @property
    def json_mode(self) -> bool:
        return self.config.get("responseMimeType") == "application/json"

    @property
    def thinking(self) -> tuple[bool, bool]:
        """(thinks, shows its thoughts): a ``thinkingConfig`` with ``thinkingBudget`` > 0 or
        ``includeThoughts`` makes the model think; ``includeThoughts`` sends the thought."""
        config = self.config.get("thinkingConfig")
        if not isinstance(config, dict):
            return False, False
        budget = config.get("thinkingBudget")
        shows = config.get("includeThoughts") is True
        return shows or (isinstance(budget, int) and budget > 0), shows


def _call_ids(part: dict[str, Any], where: str, *, call_ids: bool) -> None:
    """Vertex's v1 ``FunctionCall`` and ``FunctionResponse`` have no ``id`` (its transcoder's
    400 ``Unknown name "id"``); the Gemini API's take one."""
    for key, field in (("functionCall", "function_call"),
                       ("functionResponse", "function_response")):
        value = part.get(key)
        if not call_ids and isinstance(value, dict) and "id" in value:
            raise invalid(f'Invalid JSON payload received. Unknown name "id" at '
                          f"'{where}.{field}': Cannot find field.")


def _parts(value: Any, where: str, *, call_ids: bool = True) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for i, part in enumerate(value):
        if not isinstance(part, dict):
            raise invalid(f"Invalid value at '{where}.parts[{i}]'")
        _unknown(part, PART_FIELDS, f"{where}.parts[{i}]")
        data = [key for key in PART_DATA if key in part]
        if len(data) != 1:
            raise invalid(f"* GenerateContentRequest.{where}.parts[{i}].data: required oneof "
                          "field 'data' must have one initialized field")
        if "text" in part and not isinstance(part["text"], str):
            raise invalid(f"Invalid value at '{where}.parts[{i}].text' (TYPE_STRING)")
        _call_ids(part, f"{where}.parts[{i}]", call_ids=call_ids)
        call = part.get("functionCall") or part.get("functionResponse")
        if call is not None and (not isinstance(call, dict) or not call.get("name")):
            raise invalid(f"* GenerateContentRequest.{where}.parts[{i}]: function name is "
                          "required.")
        inline = part.get("inlineData")
        if inline is not None and (not isinstance(inline, dict) or not inline.get("mimeType")
                                   or not isinstance(inline.get("data"), str)):
            raise invalid(f"* GenerateContentRequest.{where}.parts[{i}].inline_data: mime_type "
                          "and data are required.")
        media = str(inline.get("mimeType")).lower() if inline is not None else ""
        if media.startswith("image/") and media not in IMAGE_TYPES:
            raise invalid(f"Unsupported MIME type: {media}")
    return value


def _tool(body: dict[str, Any], contents: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The function the answer calls (``app.simulator.tools``' rule): under ``ANY`` the
    declaration (among ``allowedFunctionNames``, when given) best matching the last user text;
    under ``AUTO`` (the default) and ``VALIDATED`` the same unless the last turn holds function
    responses; none under ``NONE``."""
    declared: list[dict[str, Any]] = []
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise invalid("Invalid value at 'tools' (type.googleapis.com/google.ai.generativelanguage"
                      ".v1beta.Tool)")
    for i, tool in enumerate(tools):
        for j, declaration in enumerate((tool or {}).get("functionDeclarations") or []):
            if not isinstance(declaration, dict) or not declaration.get("name"):
                raise invalid(f"* GenerateContentRequest.tools[{i}].function_declarations[{j}]"
                              ".name: [FIELD_INVALID] Invalid function name.")
            _unknown(declaration, DECLARATION_FIELDS, f"tools[{i}].function_declarations[{j}]")
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                raise invalid(f"* GenerateContentRequest.tools[{i}].function_declarations[{j}]"
                              ": parameters and parameters_json_schema are mutually exclusive")
            declared.append(declaration)
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = config.get("mode", "AUTO")
    if mode not in MODES:
        raise invalid(f"Invalid value at 'tool_config.function_calling_config.mode' "
                      f'(type.googleapis.com/google.ai.generativelanguage.v1beta.'
                      f'FunctionCallingConfig.Mode), "{mode}"')
    allowed = config.get("allowedFunctionNames")
    if allowed and mode not in ("ANY", "VALIDATED"):
        raise invalid("* GenerateContentRequest.tool_config.function_calling_config."
                      "allowed_function_names: allowed_function_names can only be set when "
                      "mode is ANY or VALIDATED.")
    if mode == "NONE" or not declared:
        return None
    if allowed:
        declared = [d for d in declared if d["name"] in allowed]
        if not declared:
            raise invalid("* GenerateContentRequest.tool_config.function_calling_config."
                          "allowed_function_names: names must match declared functions.")
    if mode != "ANY" and _answers_call(contents[-1]):
        return None
    return matching(declared, user_text(contents))


def _answers_call(turn: Any) -> bool:
    """Whether ``turn`` holds function responses (the model's turn after a call)."""
    parts = turn.get("parts") if isinstance(turn, dict) else None
    return isinstance(parts, list) and any(
        isinstance(part, dict) and "functionResponse" in part for part in parts)


def user_text(contents: list[dict[str, Any]]) -> str:
    """The text parts of the last ``user`` turn that has any, joined."""
    for turn in reversed(contents):
        if turn.get("role", "user") == "user":
            texts = [p["text"] for p in turn["parts"] if isinstance(p.get("text"), str)]
            if texts:
                return " ".join(texts)
    return ""


def _config(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid value at 'generation_config'")
    _unknown(value, GENERATION_FIELDS, "generation_config")
    temperature = value.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float)
                                    or not 0 <= temperature <= 2):
        raise invalid("* GenerateContentRequest.generation_config.temperature: must be in "
                      "[0.0, 2.0]")
    for key in ("maxOutputTokens", "candidateCount"):
        count = value.get(key)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise invalid(f"* GenerateContentRequest.generation_config.{key}: must be positive")
    _thinking_config(value.get("thinkingConfig"))
    stops = value.get("stopSequences")
    if stops is not None and (not isinstance(stops, list) or len(stops) > 5
                              or not all(isinstance(s, str) for s in stops)):
        raise invalid("* GenerateContentRequest.generation_config.stop_sequences: at most 5 "
                      "strings")
    return value


def _thinking_config(value: Any) -> None:
    """``ThinkingConfig``: an integer ``thinkingBudget`` or a ``thinkingLevel``, not both
    (Google's 400)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid("Invalid value at 'generation_config.thinking_config'")
    _unknown(value, THINKING_FIELDS, "generation_config.thinking_config")
    budget = value.get("thinkingBudget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
        raise invalid("Invalid value at 'generation_config.thinking_config.thinking_budget'")
    if budget is not None and value.get("thinkingLevel") is not None:
        raise invalid("You can only set only one of thinking budget and thinking level.")


def _answered_ids(contents: list[dict[str, Any]]) -> None:
    """A ``functionResponse`` ``id`` must be one of the ``functionCall`` ids of the model turn
    just before it: Gemini maps each response to its call by id (400 otherwise)."""
    for i, turn in enumerate(contents[1:], start=1):
        issued = {part["functionCall"].get("id") for part in contents[i - 1]["parts"]
                  if isinstance(part.get("functionCall"), dict)}
        for j, part in enumerate(turn["parts"]):
            response = part.get("functionResponse")
            given = response.get("id") if isinstance(response, dict) else None
            if given is not None and given not in issued:
                raise invalid(f"* GenerateContentRequest.contents[{i}].parts[{j}]."
                              "function_response.id: functionResponse.id does not match any "
                              "functionCall.id of the preceding model turn.")


def read_request(body: dict[str, Any], *, call_ids: bool = True) -> GenerateRequest:
    """The validated request (a 400 ``SimError`` in Google's words when it is not);
    ``call_ids``: whether the API's function calls and responses have an ``id`` (the Gemini
    API's do, Vertex's v1 do not)."""
    _unknown(body, REQUEST_FIELDS, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid("* GenerateContentRequest.contents: contents is not specified")
    for i, turn in enumerate(contents):
        if not isinstance(turn, dict):
            raise invalid(f"Invalid value at 'contents[{i}]'")
        _unknown(turn, frozenset({"role", "parts"}), f"contents[{i}]")
        if turn.get("role", "user") not in ("user", "model"):
            raise invalid(f"Please use a valid role: user, model. (contents[{i}].role)")
        _parts(turn.get("parts"), f"contents[{i}]", call_ids=call_ids)
    _answered_ids(contents)
    system_value = body.get("systemInstruction")
    system = ""
    if system_value is not None:
        if not isinstance(system_value, dict):
            raise invalid("Invalid value at 'system_instruction'")
        parts = _parts(system_value.get("parts"), "system_instruction")
        system = " ".join(p["text"] for p in parts if isinstance(p.get("text"), str))
    prompt = sum(content.count_tokens(_turn_text(turn)) + content.MESSAGE_OVERHEAD_TOKENS
                 for turn in contents)
    if system:
        prompt += content.count_tokens(system) + content.MESSAGE_OVERHEAD_TOKENS
    return GenerateRequest(contents=contents, system=system,
                           config=_config(body.get("generationConfig")),
                           tool=_tool(body, contents),
                           prompt_tokens=prompt)


def _turn_text(turn: dict[str, Any]) -> str:
    texts: list[str] = []
    for part in turn["parts"]:
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            texts.append(str(part["functionCall"].get("args", "")))
        elif isinstance(part.get("functionResponse"), dict):
            texts.append(str(part["functionResponse"].get("response", "")))
    return " ".join(texts)
