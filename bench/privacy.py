"""The privacy detectors' accuracy and speed (issue 13).

    .venv/bin/python -m bench.privacy [--messages 4000] [--negatives 2000] [--seed 13]
    .venv/bin/python -m bench.privacy --presidio en_core_web_lg   # with the presidio extra

Accuracy: a labelled corpus generated with ``faker`` (locales en_US, de_DE, fr_FR, en_GB, nl_NL,
es_ES): messages of the locale's sentences, names and addresses with 1-3 planted values each
(emails; phone numbers in the locale's and international formats; card numbers grouped or not;
IBANs grouped or not; US SSNs; IPv4 and IPv6 addresses; secrets in a dozen formats). Negatives:
1 KB pieces of the Python standard library's own source, read from the installed stdlib at run
time (offline), plus UUIDs, hex digests, base64, log lines and version strings. A detection
counts as a true positive when it has the planted value's type and overlaps its span; every
other detection is a false positive. Targets: recall >= 0.99 and precision >= 0.95 for EMAIL,
CREDIT_CARD, IBAN, US_SSN, PHONE and SECRET.

The standard library's docstrings hold real email addresses (authors, RFC examples) and real IP
addresses (``ipaddress``'s examples): those two types' detections in the stdlib part are true
positives, not counted against precision (the synthetic negatives count for every type).

Speed: the median time to detect and redact (``Detector.scan`` + ``Vault.redact``) a 1 KB and a
32 KB message of the corpus's prose with a few planted values, and of the same size without any
(targets <= 100 us and <= 1 ms).

``--presidio MODEL``: instead, the cost of adding Presidio's analyzer (``privacy.presidio`` with
that installed spaCy pipeline, PERSON and LOCATION, the default ``disable``): the median time to
detect and redact 1 KB and 32 KB of prose and of the corpus's messages (names and addresses
every ~200 characters), with the analyzer and with the built-ins alone, and the time to import
and load it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import random
import statistics
import string
import sysconfig
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers
from faker import Faker

from app.privacy.detect import BUILTIN, Detector, Finding
from app.privacy.phones import phone_number
from app.privacy.placeholders import Vault

LOCALES = {"en_US": "US", "de_DE": "DE", "fr_FR": "FR", "en_GB": "GB", "nl_NL": "NL",
           "es_ES": "ES"}
TARGETS = ("EMAIL", "CREDIT_CARD", "IBAN", "US_SSN", "PHONE", "SECRET")
DETECTOR = Detector(phone_regions=tuple(dict.fromkeys(LOCALES.values())))
"""Phone numbers without a country code are read as any of the corpus's countries'."""


@dataclass
class Sample:
    text: str
    planted: list[Finding] = field(default_factory=list)
    counted: frozenset[str] = frozenset(BUILTIN)
    """The types whose detections in this sample count against precision."""


def _random(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


_ALNUM = string.ascii_letters + string.digits
_B64URL = _ALNUM + "-_"


def _secret(rng: random.Random) -> str:
    kind = rng.randrange(11)
    if kind == 0:
        return "sk-proj-" + _random(rng, _B64URL, 48)
    if kind == 1:
        return "sk-ant-api03-" + _random(rng, _B64URL, 93) + "AA"
    if kind == 2:
        return rng.choice(("AKIA", "ASIA")) + _random(rng, string.ascii_uppercase + "234567", 16)
    if kind == 3:
        return rng.choice(("ghp_", "gho_", "ghs_")) + _random(rng, _ALNUM, 36)
    if kind == 4:
        return "github_pat_11" + _random(rng, _ALNUM + "_", 80)
    if kind == 5:
        return f"xox{rng.choice('bpas')}-{rng.randrange(10**11, 10**12)}-" + \
            _random(rng, _ALNUM, 24)
    if kind == 6:
        return "AIza" + _random(rng, _B64URL, 35)
    if kind == 7:
        return "glpat-" + _random(rng, _B64URL, 20)
    if kind == 8:
        head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
        claims = base64.urlsafe_b64encode(
            f'{{"sub":"{rng.randrange(10**9)}","iat":{rng.randrange(10**9)}}}'.encode()
        ).decode().rstrip("=")
        return f"{head}.{claims}.{_random(rng, _B64URL, 43)}"
    if kind == 9:
        body = "\n".join(_random(rng, _ALNUM + "+/", 64) for _ in range(4))
        label = rng.choice(("RSA ", "EC ", "OPENSSH ", ""))
        return f"-----BEGIN {label}PRIVATE KEY-----\n{body}\n-----END {label}PRIVATE KEY-----"
    return "sk-" + _random(rng, _ALNUM, 48)


def _grouped(value: str, rng: random.Random, sep: str) -> str:
    return sep.join(value[i:i + 4] for i in range(0, len(value), 4)) if rng.random() < 0.5 \
        else value


def _phone(fake: Faker, region: str, rng: random.Random) -> str | None:
    for _ in range(20):
        raw = fake.phone_number()
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_valid_number(number) or number.extension:
            continue
        style = rng.randrange(3)
        if style == 0:
            return raw
        return phonenumbers.format_number(number, (
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            phonenumbers.PhoneNumberFormat.NATIONAL)[style - 1])
    return None


def _value(entity: str, fake: Faker, locale: str, rng: random.Random) -> str | None:
    if entity == "EMAIL":
        return rng.choice((fake.email, fake.company_email, fake.free_email))()
    if entity == "PHONE":
        return _phone(fake, LOCALES[locale], rng)
    if entity == "CREDIT_CARD":
        number = fake.credit_card_number()
        while not 13 <= len(number) <= 19:  # faker's 12-digit Maestro: not a card number here
            number = fake.credit_card_number()
        return _grouped(number, rng, rng.choice(" -"))
    if entity == "IBAN":
        return _grouped(fake.iban(), rng, " ")
    if entity == "US_SSN":
        return fake.unique.ssn() if locale == "en_US" else None
    if entity == "IP_ADDRESS":
        return fake.ipv6() if rng.random() < 0.3 else rng.choice(
            (fake.ipv4_public, fake.ipv4_private))()
    return _secret(rng)


_LEADS = {
    "EMAIL": ("write to {v}", "my email is {v}", "cc {v} please", "<{v}>"),
    "PHONE": ("call {v}", "phone: {v}", "reach me at {v} after 5", "tel. {v}"),
    "CREDIT_CARD": ("card {v}", "charge {v} exp 09/27", "pay with {v}"),
    "IBAN": ("IBAN {v}", "transfer to {v}", "account: {v}"),
    "US_SSN": ("SSN {v}", "social security number {v}", "my ssn is {v}"),
    "IP_ADDRESS": ("from {v}", "host {v} port 443", "client={v}"),
    "SECRET": ("use key {v}", "export TOKEN={v}", "here: {v}", "auth {v} thanks"),
}
_EXTRA_SECRET = ('password="{v}"', "api_key: {v}")


def positives(n: int, seed: int) -> Iterator[Sample]:
    """``n`` messages in rotating locales, each with 1-3 planted values and their spans."""
    rng = random.Random(seed)
    fakes = {locale: Faker(locale) for locale in LOCALES}
    for f in fakes.values():
        f.seed_instance(seed)
    entities = list(BUILTIN)
    for i in range(n):
        locale = list(LOCALES)[i % len(LOCALES)]
        fake = fakes[locale]
        parts: list[str] = [fake.sentence(), fake.name() + ",", fake.address().replace("\n", ", ")]
        planted: list[tuple[str, str, str]] = []
        for _ in range(rng.randint(1, 3)):
            entity = rng.choice(entities)
            value = _value(entity, fake, locale, rng)
            if value is None:
                continue
            lead = rng.choice(_LEADS[entity])
            if entity == "SECRET" and rng.random() < 0.15:
                value = _random(rng, _ALNUM, rng.randint(16, 40))
                lead = rng.choice(_EXTRA_SECRET)
            planted.append((entity, lead, value))
        text, found = " ".join(parts), []
        for entity, lead, value in planted:
            before, _, after = lead.partition("{v}")
            text += " " + before
            found.append(Finding(entity, len(text), len(text) + len(value)))
            text += value + after + " " + fake.sentence()
        yield Sample(text, found)


def negatives(n: int, seed: int) -> Iterator[Sample]:
    """Text that looks like entities without being them: ``n`` 1 KB pieces of the standard
    library's source, and ``n`` lines of identifiers, digests, logs and versions."""
    rng = random.Random(seed)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py"))
    rng.shuffle(files)
    made = 0
    for path in files:
        source = path.read_text(errors="replace")
        for start in range(0, len(source), 1024):
            if made >= n:
                break
            yield Sample(source[start:start + 1024],
                         counted=frozenset(BUILTIN) - {"EMAIL", "IP_ADDRESS"})
            made += 1
    for _ in range(n):
        kind = rng.randrange(6)
        if kind == 0:
            text = f"id={uuid.UUID(int=rng.getrandbits(128))} parent {uuid.uuid4()}"
        elif kind == 1:
            data = rng.randbytes(32)
            text = (f"sha256 {hashlib.sha256(data).hexdigest()} md5 {hashlib.md5(data).hexdigest()}"
                    f" commit {hashlib.sha1(data).hexdigest()}")
        elif kind == 2:
            text = "blob: " + base64.b64encode(rng.randbytes(rng.randint(24, 300))).decode()
        elif kind == 3:
            text = (f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
                    f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
                    f",{rng.randint(0, 999):03d} INFO [worker-{rng.randint(1, 64)}] request "
                    f"{rng.getrandbits(32):08x} took {rng.randint(1, 99999)} ms, "
                    f"{rng.randint(0, 10**6)} bytes, pid {rng.randint(100, 99999)}")
        elif kind == 4:
            major, minor, patch = rng.randint(0, 30), rng.randint(0, 99), rng.randint(0, 999)
            text = (f"version {major}.{minor}.{patch} (build {major}.{minor}.{patch}."
                    f"{rng.randint(0, 99999)}), requires numpy>={minor}.{patch} v{major}.{minor}")
        else:
            text = (f"order {rng.randint(10**6, 10**12)} total {rng.randint(1, 99999)}."
                    f"{rng.randint(0, 99):02d} EUR, qty {rng.randint(1, 500)}, "
                    f"ts {rng.randint(10**12, 2 * 10**12)}")
        yield Sample(text)


@dataclass
class Score:
    tp: Counter[str] = field(default_factory=Counter)
    fn: Counter[str] = field(default_factory=Counter)
    fp: Counter[str] = field(default_factory=Counter)
    false: list[tuple[str, str]] = field(default_factory=list)
    missed: list[tuple[str, str]] = field(default_factory=list)

    def recall(self, entity: str) -> float:
        total = self.tp[entity] + self.fn[entity]
        return self.tp[entity] / total if total else 1.0

    def precision(self, entity: str) -> float:
        total = self.tp[entity] + self.fp[entity]
        return self.tp[entity] / total if total else 1.0


def score(samples: Iterator[Sample], detector: Detector = DETECTOR) -> Score:
    """True and false positives and misses over ``samples`` (see the module docstring)."""
    result = Score()
    for sample in samples:
        found = detector.scan(sample.text)
        matched: set[int] = set()
        for planted in sample.planted:
            hit = next((i for i, f in enumerate(found) if f.entity == planted.entity
                        and f.start < planted.end and planted.start < f.end), None)
            if hit is None:
                result.fn[planted.entity] += 1
                result.missed.append((planted.entity,
                                      sample.text[planted.start:planted.end]))
            else:
                result.tp[planted.entity] += 1
                matched.add(hit)
        for i, f in enumerate(found):
            if i not in matched and f.entity in sample.counted:
                result.fp[f.entity] += 1
                result.false.append((f.entity, sample.text[f.start:f.end]))
    return result


def _timed(text: str, runs: int, detector: Detector = DETECTOR) -> float:
    """Median microseconds to detect and redact ``text``, cold: the phone candidates' cache
    (``app.privacy.phones.phone_number``) emptied before each run, as for a text never seen.
    (What is compiled once per country from ``phonenumbers``' metadata stays compiled, as the
    detector's regexes do: it holds no value.)"""
    times = []
    for _ in range(runs):
        phone_number.cache_clear()
        started = time.perf_counter()
        Vault().redact(text, detector.scan(text))
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def message(size: int, *, seed: int, values: int) -> str:
    """About ``size`` characters of English prose (faker's paragraphs) with ``values`` planted
    values spread through it (an email, a phone number, a card number, an IBAN, in turn);
    ``values=-1``: the labelled corpus's own messages back to back (names, addresses and 1-3
    values every ~200 characters: the dense worst case)."""
    if values < 0:
        texts = (sample.text for sample in positives(size // 100 + 4, seed))
        out, total = [], 0
        while total < size:
            piece = next(texts)
            out.append(piece)
            total += len(piece) + 1
        return " ".join(out)[:size]
    fake = Faker("en_US")
    fake.seed_instance(seed)
    planted = ["Reach me at j.doe@example.com.", "My phone is (415) 555-2671.",
               "Card 4111 1111 1111 1111 exp 09/27.", "IBAN DE89 3704 0044 0532 0130 00."]
    parts: list[str] = []
    total, every = 0, size // (values + 1) if values else size + 1
    next_at, planted_n = every, 0
    while total < size:
        piece = fake.paragraph(5)
        if total >= next_at and planted_n < values:
            piece = planted[planted_n % len(planted)] + " " + piece
            planted_n += 1
            next_at += every
        parts.append(piece)
        total += len(piece) + 1
    text = " ".join(parts)
    return text[:size] if planted_n == values else text


def gateway(seconds: float, rounds: int) -> None:
    """Throughput of a gateway with the privacy stage redacting every request against the same
    gateway without a policy (``bench.providers``' closed loop and default body, openai type on
    the simulator), medians of alternating rounds. Target: >= 90%."""
    import statistics
    import tempfile
    from pathlib import Path

    from bench.calllog_overhead import switchboard
    from bench.providers import config, measure, providers
    from tests.servers import free_port

    work = Path(tempfile.mkdtemp(prefix="sb-privacybench-"))
    runs: dict[str, list[tuple[float, float]]] = {"no policy": [], "redact": []}
    with switchboard("simulate", port=free_port(), core=1) as simulator:
        provider, model = providers(str(simulator))["openai"]
        for round_ in range(rounds):
            order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
            for name in order:
                raw = config(provider, model)
                if name == "redact":
                    raw["models"]["chat"]["privacy"] = {"action": "redact"}
                runs[name].append(measure(raw, work, seconds=seconds))
                rps, cpu = runs[name][-1]
                print(f"  round {round_ + 1}, {name}: {rps:.0f} req/s, {cpu:.0f} us CPU/request",
                      flush=True)
    base = statistics.median(r[0] for r in runs["no policy"])
    base_cpu = statistics.median(r[1] for r in runs["no policy"])
    for name, found in runs.items():
        rps, cpu = statistics.median(r[0] for r in found), statistics.median(r[1] for r in found)
        print(f"{name:<10} {rps:>8.0f} req/s {rps / base:>7.1%}   {cpu:>5.0f} us CPU/request "
              f"{cpu / base_cpu:>5.2f}x")


def presidio(model: str, seed: int) -> None:
    """The cost of Presidio's analyzer on top of the built-ins (see the module docstring)."""
    import asyncio

    from app.privacy.config import PresidioConfig

    started = time.perf_counter()
    from app.privacy.presidio import load_scanner

    imported = time.perf_counter() - started
    started = time.perf_counter()
    scanner = asyncio.run(load_scanner(PresidioConfig(model=model)))
    loaded = time.perf_counter() - started
    detector = Detector(entities={*BUILTIN, *scanner.entities},
                        phone_regions=DETECTOR.phone_regions, model=scanner)
    print(f"presidio over {model}: imported in {imported:.1f} s, loaded in {loaded:.1f} s")
    print("median of detect + redact, milliseconds (with the analyzer | built-ins alone):")
    for size, runs, values in ((1024, 100, 2), (1024, 100, -1), (32 * 1024, 10, 2),
                               (32 * 1024, 10, -1)):
        text = message(size, seed=seed, values=values)
        kind = "corpus (names)" if values < 0 else "prose, 2 values"
        with_model, alone = _timed(text, runs, detector), _timed(text, runs)
        found = Counter(f.entity for f in detector.scan(text))
        print(f"  {size // 1024:>2} KB {kind:<16} {with_model / 1000:8.2f} ms | "
              f"{alone / 1000:6.3f} ms  ({found['PERSON']} PERSON, {found['LOCATION']} "
              f"LOCATION, {sum(found.values())} in all)")
    scanner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--negatives", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--gateway", action="store_true",
                        help="measure a gateway's throughput with and without redaction instead")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--presidio", metavar="MODEL",
                        help="measure the Presidio extra over this installed spaCy pipeline "
                             "(package name or directory) instead")
    args = parser.parse_args()
    if args.presidio:
        presidio(args.presidio, args.seed)
        return
    if args.gateway:
        gateway(args.duration, args.rounds)
        return
    pos = score(positives(args.messages, args.seed))
    neg = score(negatives(args.negatives, args.seed))
    print(f"accuracy: {args.messages} labelled messages ({', '.join(LOCALES)}), "
          f"{args.negatives} stdlib pieces + {args.negatives} synthetic negatives")
    print(f"{'entity':<12} {'planted':>8} {'recall':>8} {'precision':>10} {'false+':>7}  target")
    for entity in BUILTIN:
        tp, fn = pos.tp[entity], pos.fn[entity]
        fp = pos.fp[entity] + neg.fp[entity]
        precision = tp / (tp + fp) if tp + fp else 1.0
        met = "" if entity not in TARGETS else (
            "ok" if pos.recall(entity) >= 0.99 and precision >= 0.95 else "MISSED")
        print(f"{entity:<12} {tp + fn:>8} {pos.recall(entity):>8.4f} {precision:>10.4f} "
              f"{fp:>7}  {met}")
    for what, items in (("missed", pos.missed), ("false positives", pos.false + neg.false)):
        if items:
            print(f"{what} (first 8): {items[:8]}")
    print("\nspeed (median of detect + redact, microseconds; phone regions "
          f"{', '.join(DETECTOR.phone_regions)}):")
    for size, runs, values in ((1024, 2000, 0), (1024, 2000, 2), (1024, 500, -1),
                               (32 * 1024, 200, 0), (32 * 1024, 200, 16),
                               (32 * 1024, 20, -1)):
        text = message(size, seed=args.seed, values=values)
        kind = {0: "prose only", -1: "corpus (dense)"}.get(values, f"{values} values")
        print(f"  {size // 1024:>2} KB {kind:<15} {_timed(text, runs):9.1f} us"
              f"  ({len(DETECTOR.scan(text))} found)")


if __name__ == "__main__":
    main()
