"""The Presidio extra (``privacy.presidio``): its config, the scanner over a real spaCy pipeline
the tests save to disk (``presidio_pipeline``), its findings merged with the built-ins', and the
stage loading one scanner per config. Skipped where the extra is not installed; ``make test``
installs it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("presidio_analyzer")
pytest.importorskip("spacy")

from app import errors
from app.config import ConfigError, GatewayConfig, parse_config
from app.privacy.config import PresidioConfig
from app.privacy.detect import Detector, Finding
from app.privacy.presidio import OVERLAP, PIECE, PresidioScanner, load_scanner, pieces
from app.stages.privacy import Privacy
from tests.privacy.presidio_pipeline import (
    LONGER_PLACE,
    ORGANISATION,
    TIED_CARD,
    raw,
    save_pipeline,
)

NAMES_AND_PLACES = frozenset({"PERSON", "LOCATION"})
TEXT = "Ann Lee of 742 Evergreen Terrace, Springfield, met Ravi Patel on Baker Street."


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pipeline(tmp_path_factory.mktemp("pipeline"))


def section(pipeline: Path, **more: Any) -> dict[str, Any]:
    return {"model": str(pipeline), "labels": {"STREET": "LOCATION"}, **more}


async def scanner_of(pipeline: Path, **more: Any) -> PresidioScanner:
    return await load_scanner(PresidioConfig.model_validate(section(pipeline, **more)))


def spans(text: str, found: list[Finding]) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start:f.end]) for f in found]


async def test_names_and_places_are_found(pipeline: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """The pipeline's PERSON, GPE, FAC and own STREET labels become PERSON and LOCATION
    findings; its other labels (CARDINAL) are ignored without a warning per entity."""
    scanner = await scanner_of(pipeline)
    text = TEXT + f" Seven? seven. {ORGANISATION}."
    with caplog.at_level(logging.WARNING, logger="presidio-analyzer"):
        found = scanner.scan(text, NAMES_AND_PLACES)
    assert spans(text, sorted(found, key=lambda f: f.start)) == [
        ("PERSON", "Ann Lee"), ("LOCATION", "742 Evergreen Terrace"),
        ("LOCATION", "Springfield"), ("PERSON", "Ravi Patel"), ("LOCATION", "Baker Street")]
    assert spans(text, scanner.scan(text, frozenset({"PERSON"}))) == \
        [("PERSON", "Ann Lee"), ("PERSON", "Ravi Patel")]
    assert not [r for r in caplog.records if r.name == "presidio-analyzer"]
    scanner.close()


async def test_organisations_when_asked(pipeline: Path) -> None:
    """``entities`` chooses the types: ORGANIZATION from the pipeline's ORG label."""
    scanner = await scanner_of(pipeline, entities=["ORGANIZATION"])
    assert scanner.entities == {"ORGANIZATION"}
    text = f"{ORGANISATION} hired Ann Lee"
    assert spans(text, scanner.scan(text, scanner.entities)) == \
        [("ORGANIZATION", ORGANISATION)]
    scanner.close()


async def test_merged_with_the_builtins(pipeline: Path) -> None:
    """A detector with the scanner returns both kinds, overlaps resolved as the built-ins'
    are: the longer span wins; on the same span the built-in type does."""
    scanner = await scanner_of(pipeline)
    detector = Detector(entities={"EMAIL", "CREDIT_CARD", "IP_ADDRESS", "PERSON", "LOCATION"},
                        model=scanner)
    text = f"Ann Lee <ann.lee@corp-example.com> paid {TIED_CARD} at {LONGER_PLACE}."
    assert spans(text, detector.scan(text)) == [
        ("PERSON", "Ann Lee"), ("EMAIL", "ann.lee@corp-example.com"),
        ("CREDIT_CARD", TIED_CARD), ("LOCATION", LONGER_PLACE)]
    assert spans(text, detector.scan(text, model=False)) == [
        ("EMAIL", "ann.lee@corp-example.com"), ("CREDIT_CARD", TIED_CARD),
        ("IP_ADDRESS", "10.1.2.3")]
    assert Detector(entities={"EMAIL"}, model=scanner).model is None  # none of its types
    scanner.close()


async def test_long_texts_are_analysed_in_pieces(pipeline: Path) -> None:
    """A text longer than a piece is cut at line breaks, and names keep their offsets."""
    line = "nothing to see here, " * 4 + "\n"
    text = line * (PIECE // len(line) * 5 // 2) + "Ann Lee"
    cut = pieces(text, PIECE)
    assert len(cut) == 3 and "".join(p.text for p in cut) == text
    assert all(len(p.text) <= PIECE and p.text.endswith("\n") for p in cut[:-1])
    assert all(text.startswith(p.text, p.offset) for p in cut)
    scanner = await scanner_of(pipeline)
    assert spans(text, scanner.scan(text, NAMES_AND_PLACES)) == [("PERSON", "Ann Lee")]
    assert [p.text for p in pieces("x" * 10, 4)] == ["xxxx", "xxxx", "xx"]
    scanner.close()


def test_pieces_overlap_and_own_the_text_end_to_end() -> None:
    """Each piece reads ``overlap`` characters past its own part on either side, within
    ``size``; the own parts cover the text once, cut at a space where there is one."""
    text = "ab cd ef gh ij"
    cut = pieces(text, 6, 1)
    assert [(p.own_start, p.own_end) for p in cut] == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 14)]
    assert [p.text for p in cut] == ["ab c", " cd e", " ef g", " gh i", " ij"]
    assert all(text.startswith(p.text, p.offset) and len(p.text) <= 6 for p in cut)
    assert all(p.offset == max(0, p.own_start - 1) for p in cut)
    with pytest.raises(ValueError, match="cannot overlap"):
        pieces("x" * 10, 4, 2)


async def test_a_name_across_a_cut_is_found_once(pipeline: Path) -> None:
    """A name whose space is the last one before a cut ("Ann | Lee": a single-line text, a
    minified document) is found whole, at either cut, and exactly once; so is each of many
    names spread over several pieces (none lost near a cut, none found twice in an
    overlap)."""
    scanner = await scanner_of(pipeline)
    for cut in (PIECE - 2 * OVERLAP, PIECE):
        text = "x" * (cut - 5) + " Ann Lee is here"
        assert spans(text, scanner.scan(text, NAMES_AND_PLACES)) == [("PERSON", "Ann Lee")]
    reported = ("word " * 19999)[:99996] + " Ann Lee is here"  # the tester's, cut at 100,000
    assert spans(reported, scanner.scan(reported, NAMES_AND_PLACES)) == [("PERSON", "Ann Lee")]
    chunk = "w " * 160 + "Ann Lee "  # a name every 328 characters, 800 of them
    text = chunk * 800
    found = scanner.scan(text, NAMES_AND_PLACES)
    assert len(text) > 2 * PIECE and len(found) == 800
    assert [f.start for f in found] == [i * len(chunk) + 320 for i in range(800)]
    assert {text[f.start:f.end] for f in found} == {"Ann Lee"}
    scanner.close()


async def test_loading_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline that is not installed is refused by the loader too (should the config's
    check be bypassed), and spaCy's downloader, which Presidio's own engine calls for a
    missing model, is never called."""
    import spacy.cli

    downloads: list[str] = []
    monkeypatch.setattr(spacy.cli, "download", lambda name, *a, **k: downloads.append(name))
    unchecked = PresidioConfig.model_construct(model="en_core_web_absent",
                                               entities=["PERSON"], labels={}, disable=[])
    with pytest.raises(errors.GatewayError) as refused:
        await load_scanner(unchecked)
    assert refused.value.code == "privacy_model_unavailable"
    assert "'en_core_web_absent': cannot load it" in refused.value.message
    assert downloads == []


async def test_a_pipeline_that_finds_nothing_is_refused(pipeline: Path) -> None:
    """Disabling the component that finds entities leaves nothing to run: refused at load."""
    with pytest.raises(errors.GatewayError) as refused:
        await scanner_of(pipeline, disable=["entity_ruler"])
    assert "finds no entities" in refused.value.message


def test_config_refuses_a_pipeline_not_installed(tmp_path: Path) -> None:
    """A model that is neither an installed package nor a saved pipeline's directory is a
    config error naming the path, at load: never a download."""
    for model in ("en_core_web_absent", str(tmp_path)):
        with pytest.raises(ConfigError) as refused:
            parse_config(raw({"model": model}), {})
        message = str(refused.value)
        assert "privacy.presidio" in message and "never downloaded" in message
        assert repr(model) in message


def test_model_types_join_the_known_entities(pipeline: Path) -> None:
    """With presidio configured a model's ``entities`` may name PERSON; without, it is an
    unknown type; a custom type may not take a Presidio type's name."""
    parse_config(raw(section(pipeline)), {})
    with pytest.raises(ConfigError, match=r"unknown entity types \['PERSON'\]"):
        parse_config(raw(None), {})
    with pytest.raises(ConfigError, match=r"are built-in types or ones privacy\.presidio finds"):
        parse_config(raw(section(pipeline), words=[{"name": "PERSON", "words": ["bob"]}]), {})
    with pytest.raises(ConfigError, match=r"privacy\.presidio\.entities\.0: Input should be"):
        parse_config(raw(section(pipeline, entities=["EMAIL"])), {})


def test_missing_extra_is_a_config_error(pipeline: Path) -> None:
    """Without presidio-analyzer installed, a config naming privacy.presidio is refused with
    the extra to install."""
    script = ("import sys\nsys.modules['presidio_analyzer'] = None\n"
              "from app.config import ConfigError, parse_config\n"
              "from tests.privacy.presidio_pipeline import raw\n"
              "try:\n"
              f"    parse_config(raw({{'model': {str(pipeline)!r}}}), {{}})\n"
              "except ConfigError as exc:\n"
              "    print(exc)\n")
    out = _run(script)
    assert "needs the presidio extra" in out and "switchboard[presidio]" in out


def test_builtins_alone_import_neither_presidio_nor_spacy() -> None:
    """A config without privacy.presidio compiles and scans without importing either."""
    script = ("import asyncio, sys\n"
              "from app.config import parse_config\n"
              "from app.stages.privacy import Privacy\n"
              "from tests.privacy.presidio_pipeline import raw\n"
              "config = parse_config({**raw(None), 'models': {}}, {})\n"
              "stage = Privacy()\n"
              "asyncio.run(stage.prepare(config))\n"
              "policy = stage.policies(config).of('x')\n"
              "assert policy.detector.scan('ann@x.org')\n"
              "print(sorted(m for m in ('spacy', 'presidio_analyzer') if m in sys.modules))\n")
    assert _run(script).strip() == "[]"


def _run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _config(pipeline: Path, **more: Any) -> GatewayConfig:
    return parse_config(raw(section(pipeline, **more)), {})


async def test_one_scanner_per_section_and_the_latest_two_kept(pipeline: Path) -> None:
    """The stage loads a scanner when a config's section is new, reuses it for a config with
    the same section, keeps the latest two, and fails a call on an older config closed (503),
    never on a scanner it closed."""
    stage = Privacy()
    first = _config(pipeline)
    await stage.prepare(first)
    model = stage.policies(first).of("all").detector.model
    assert model is not None
    same = _config(pipeline)
    assert same is not first
    await stage.prepare(same)
    policy = stage.policies(same).of("names")
    assert policy.detector.model is model
    assert spans(TEXT, policy.detector.scan(TEXT)) == \
        [("PERSON", "Ann Lee"), ("PERSON", "Ravi Patel")]
    for entities in (["PERSON"], ["PERSON", "ORGANIZATION"]):
        await stage.prepare(_config(pipeline, entities=entities))
    for old in (first, same):  # ``same``'s policies were compiled: they held the closed one
        with pytest.raises(errors.GatewayError) as gone:
            stage.policies(old)
        assert (gone.value.status_code, gone.value.code) == (503, "privacy_model_unavailable")
