"""SPF on the root of a sending domain (RFC 7208).

What receivers do with the record decides the verdict: exactly one ``v=spf1`` record,
valid syntax, at most 10 DNS-querying terms and 2 void lookups over the whole include tree,
no loops, and an ``all`` that says something. Our own mail uses the envelope sender
``rp.<domain>``, so the root record matters for alignment only when the return path is not
set up; receivers still judge a domain without SPF, so a missing record is a warning.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import dns.resolver

from domains.checks import dnsutil
from domains.checks.results import CheckResult, error, ok, unknown, warning

NAME = "spf"
MAX_LOOKUPS = 10  # RFC 7208 §4.6.4: include, a, mx, ptr, exists and redirect, recursively
MAX_VOID_LOOKUPS = 2  # RFC 7208 §4.6.4: queries answered NXDOMAIN or with no records
MAX_MX_HOSTS = 10  # RFC 7208 §4.6.4: an mx term may not need more than 10 address lookups
WARNING_POINTS = 5.0
# Past this many DNS-querying terms the verdict is already "too many": stop following
# includes so a huge or hostile include tree cannot keep us querying.
_WALK_CEILING = 4 * MAX_LOOKUPS

MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
# Mistakes seen in real records, with the term that was meant.
_MISSPELLED = {"ipv4": "ip4", "ipv6": "ip6", "ip": "ip4", "includes": "include", "inc": "include"}

_SPF_VERSION = re.compile(r"v=spf1(?: |$)", re.IGNORECASE)  # RFC 7208 §4.5
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.DOTALL)
_MECHANISM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9_.\-]*)(.*)", re.DOTALL)
_DUAL_CIDR = re.compile(r"(?:/(\d+))?(?://(\d+))?$")
_MACRO = re.compile(r"%(?:\{([A-Za-z])(\d*)([rR]?)([.\-+,/_=]*)\}|[%_-])")
_TOPLABEL = re.compile(r"[a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9-]*[a-z0-9]", re.IGNORECASE)
_MACRO_LETTERS = frozenset("slodiphv")
_EXP_ONLY_LETTERS = frozenset("crt")  # RFC 7208 §7.2: only in explanation text


class SpfSyntaxError(ValueError):
    """The record breaks RFC 7208's grammar: receivers return permerror (§4.6)."""


@dataclass(frozen=True)
class SpfTerm:
    """One mechanism or modifier of a record, as written (names in lower case)."""

    name: str
    value: str = ""  # the domain-spec or network after ":" or "="; "" when absent
    qualifier: str = "+"
    cidr: str = ""  # a/mx prefix lengths as written ("/24", "//64", "/24//64")
    modifier: bool = False

    def __str__(self) -> str:
        if self.modifier:
            return f"{self.name}={self.value}"
        qualifier = "" if self.qualifier == "+" else self.qualifier
        value = f":{self.value}" if self.value else ""
        return f"{qualifier}{self.name}{value}{self.cidr}"


@dataclass(frozen=True)
class SpfRecord:
    """A parsed ``v=spf1`` record.

    ``mechanisms`` are the ones a receiver evaluates, in order, up to and including the
    first ``all``; ``after_all`` are mechanisms written after it, which are never evaluated
    (RFC 7208 §5.1).
    """

    mechanisms: tuple[SpfTerm, ...]
    after_all: tuple[SpfTerm, ...] = ()
    redirect: str | None = None
    exp: str | None = None
    unknown_modifiers: tuple[SpfTerm, ...] = ()

    @property
    def all(self) -> str | None:
        """The qualifier of the ``all`` mechanism, or None when the record has none."""
        return next((t.qualifier for t in self.mechanisms if t.name == "all"), None)

    @property
    def effective_redirect(self) -> str | None:
        """``redirect=`` counts only without an ``all`` mechanism (RFC 7208 §6.1)."""
        return None if self.all is not None else self.redirect


def is_spf_record(text: str) -> bool:
    """Whether a TXT value is an SPF record: it starts with exactly ``v=spf1`` (§4.5)."""
    return _SPF_VERSION.match(text) is not None


def parse_spf(record: str) -> SpfRecord:
    """Parse a ``v=spf1`` record (pure; no DNS).

    Raises SpfSyntaxError, whose message names the offending term and says what to write
    instead, for anything RFC 7208 §12 does not allow: receivers treat any syntax error
    anywhere in the record as a permanent error (§4.6), so SPF then fails for every message.
    """
    words = record.split()
    if not words or words[0].lower() != "v=spf1":
        raise SpfSyntaxError('it must start with "v=spf1".')
    mechanisms: list[SpfTerm] = []
    after_all: list[SpfTerm] = []
    unknown_modifiers: list[SpfTerm] = []
    modifiers: dict[str, str] = {}
    for word in words[1:]:
        term = _parse_term(word)
        if term.modifier:
            if term.name in ("redirect", "exp"):
                # §6: each of these at most once, or permerror.
                if term.name in modifiers:
                    raise SpfSyntaxError(
                        f'"{term.name}=" appears twice; keep only one {term.name}= term.'
                    )
                modifiers[term.name] = term.value
            else:
                unknown_modifiers.append(term)  # §6: unknown modifiers are ignored
        elif any(t.name == "all" for t in mechanisms):
            after_all.append(term)
        else:
            mechanisms.append(term)
    return SpfRecord(
        mechanisms=tuple(mechanisms),
        after_all=tuple(after_all),
        redirect=modifiers.get("redirect"),
        exp=modifiers.get("exp"),
        unknown_modifiers=tuple(unknown_modifiers),
    )


def _parse_term(word: str) -> SpfTerm:
    modifier = _MODIFIER.fullmatch(word)
    if modifier:
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp"):
            if not value:
                raise SpfSyntaxError(f'"{word}" has no domain after "=".')
            _check_domain_spec(value, word, explanation=name == "exp")
        return SpfTerm(name=name, value=value, modifier=True)
    match = _MECHANISM.fullmatch(word)
    if match is None:
        raise SpfSyntaxError(f'"{word}" is not an SPF term; remove it.')
    qualifier, raw_name, rest = match.groups()
    name = raw_name.lower()
    if name not in MECHANISMS:
        if rest.startswith("=") and qualifier:
            raise SpfSyntaxError(f'"{word}": modifiers take no qualifier; write "{word[1:]}".')
        meant = _MISSPELLED.get(name)
        hint = f'write "{qualifier}{meant}{rest}"' if meant else "remove it or fix its spelling"
        raise SpfSyntaxError(
            f'"{word}" is not an SPF mechanism (all, include, a, mx, ptr, ip4, ip6, exists): '
            f"{hint}."
        )
    term = SpfTerm(name=name, qualifier=qualifier or "+")
    if name == "all":
        if rest:
            raise SpfSyntaxError(f'"{word}": all takes no value; write "{qualifier}all".')
        return term
    if name in ("ip4", "ip6"):
        return _ip_term(term, word, rest)
    if name in ("include", "exists"):
        if not rest.startswith(":") or len(rest) == 1:
            raise SpfSyntaxError(f'"{word}" needs a domain: write "{name}:example.com".')
        _check_domain_spec(rest[1:], word)
        return SpfTerm(name=name, value=rest[1:], qualifier=term.qualifier)
    # a, mx, ptr: an optional domain-spec, and for a/mx an optional dual CIDR length.
    spec, cidr = rest, ""
    if name in ("a", "mx"):
        cidr_match = _DUAL_CIDR.search(rest)
        assert cidr_match is not None  # the pattern can match the empty string at the end
        cidr = cidr_match.group(0)
        spec = rest[: cidr_match.start()]
        _check_cidr(cidr_match.group(1), 32, word)
        _check_cidr(cidr_match.group(2), 128, word)
    if spec:
        if not spec.startswith(":") or len(spec) == 1:
            raise SpfSyntaxError(f'"{word}" is malformed: write "{name}" or "{name}:example.com".')
        spec = spec[1:]
        _check_domain_spec(spec, word)
    return SpfTerm(name=name, value=spec, qualifier=term.qualifier, cidr=cidr)


def _ip_term(term: SpfTerm, word: str, rest: str) -> SpfTerm:
    version = 4 if term.name == "ip4" else 6
    example = "192.0.2.0/24" if version == 4 else "2001:db8::/32"
    if not rest.startswith(":") or len(rest) == 1:
        raise SpfSyntaxError(f'"{word}" needs a network: write "{term.name}:{example}".')
    network = rest[1:]
    _, _, length = network.partition("/")
    if length:
        _check_cidr(length, 32 if version == 4 else 128, word)
    try:
        parsed = ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise SpfSyntaxError(
            f'"{word}" is not a valid IPv{version} network: write e.g. "{term.name}:{example}".'
        ) from None
    if parsed.version != version:
        other = "ip6" if version == 4 else "ip4"
        raise SpfSyntaxError(f'"{word}" holds an IPv{parsed.version} address: write "{other}:".')
    return SpfTerm(name=term.name, value=network, qualifier=term.qualifier)


def _check_cidr(length: str | None, maximum: int, word: str) -> None:
    # §12: no leading zeros, and within the address size.
    if length is None:
        return
    if not length.isdigit() or (len(length) > 1 and length[0] == "0") or int(length) > maximum:
        raise SpfSyntaxError(f'"{word}": the prefix length /{length} must be 0 to {maximum}.')


def _check_domain_spec(spec: str, word: str, *, explanation: bool = False) -> None:
    """RFC 7208 §7.1/§12: macro-string, ending in "." toplabel or in a macro."""
    position = 0
    ends_with_macro = False
    while position < len(spec):
        char = spec[position]
        if char == "%":
            macro = _MACRO.match(spec, position)
            if macro is None:
                raise SpfSyntaxError(
                    f'"{word}" has a broken macro at "{spec[position:]}": write %{{d}}, '
                    "%{i} and the like, or %% for a literal percent sign."
                )
            letter, digits = macro.group(1), macro.group(2)
            if letter is not None:
                allowed = _MACRO_LETTERS | (_EXP_ONLY_LETTERS if explanation else frozenset())
                if letter.lower() not in allowed:
                    raise SpfSyntaxError(f'"{word}": %{{{letter}}} is not a macro allowed here.')
                if digits and int(digits) == 0:  # §7.3: a digit transformer is nonzero
                    raise SpfSyntaxError(f'"{word}": a macro cannot keep 0 labels.')
            position = macro.end()
            ends_with_macro = True
            continue
        if not 0x21 <= ord(char) <= 0x7E:
            raise SpfSyntaxError(f'"{word}" contains a character not allowed in a domain.')
        position += 1
        ends_with_macro = False
    if ends_with_macro:
        return
    labels = spec.rstrip(".").split(".") if spec.endswith(".") else spec.split(".")
    if len(labels) < 2 or not _TOPLABEL.fullmatch(labels[-1]) or "" in labels[1:]:
        raise SpfSyntaxError(f'"{word}": "{spec}" is not a full domain name such as example.com.')


# -- following the record through DNS ------------------------------------------------------


class _PermError(Exception):
    """Something that makes receivers stop with permerror; the message says what to fix."""


@dataclass
class _Walk:
    """Evaluates a record's DNS-querying terms the way a receiver would, without an IP."""

    resolver: dns.resolver.Resolver
    platform: str
    lookups: int = 0
    void: list[str] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)
    records: dict[str, str] = field(default_factory=dict)
    platform_path: list[str] | None = None
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False

    def run(self, name: str, record: SpfRecord) -> str | None:
        """Returns the effective ``all`` qualifier of the record at ``name``."""
        return self._evaluate(name, record, [name], authorizes=True)

    def _evaluate(
        self, name: str, record: SpfRecord, chain: list[str], *, authorizes: bool
    ) -> str | None:
        for term in record.mechanisms:
            if self.truncated:
                return record.all
            if term.name in LOOKUP_TERMS:
                self._count()
            if term.name == "include":
                self._include(name, term, chain, authorizes=authorizes)
            elif term.name in ("a", "exists"):
                target = term.value or name
                if "%" not in target and not self._has_address(target):
                    self.void.append(f"{term} (at {name})")
            elif term.name == "mx":
                target = term.value or name
                if "%" not in target:
                    hosts = dnsutil.resolve(self.resolver, target, "MX")
                    if not hosts:
                        self.void.append(f"{term} (at {name})")
                    elif len(hosts) > MAX_MX_HOSTS:
                        raise _PermError(
                            f"{target} has {len(hosts)} MX hosts, more than the {MAX_MX_HOSTS} "
                            f"an mx term may use (RFC 7208 §4.6.4): replace {term} in the SPF "
                            f"record at {name} with ip4:/ip6: ranges."
                        )
            elif term.name == "ptr":
                self._warn(
                    f"The SPF record at {name} uses {term}, which RFC 7208 §5.5 says not to "
                    "use (slow, and some receivers ignore it): replace it with ip4:/ip6: ranges."
                )
        redirect = record.effective_redirect
        if redirect is None or self.truncated:
            return record.all
        self._count()
        if "%" in redirect:
            return None
        target = _normalize(redirect)
        redirected = self._fetch(target, chain, via=f"redirect={redirect}", referrer=name)
        if target == self.platform and authorizes and self.platform_path is None:
            self.platform_path = [*chain, target]
        # §6.1: the redirect target's result is the record's result, its all included.
        return self._evaluate(target, redirected, [*chain, target], authorizes=authorizes)

    def _include(self, name: str, term: SpfTerm, chain: list[str], *, authorizes: bool) -> None:
        if "%" in term.value:
            return  # depends on the message; counted above, nothing to follow
        target = _normalize(term.value)
        self.includes.append(" -> ".join([*chain, target]))
        # Only a "+include" passes the included result on; "-include:" etc. never authorize.
        passes = authorizes and term.qualifier == "+"
        included = self._fetch(target, chain, via=str(term), referrer=name)
        if target == self.platform and passes and self.platform_path is None:
            self.platform_path = [*chain, target]
        inner_all = self._evaluate(target, included, [*chain, target], authorizes=passes)
        if inner_all == "+" and term.qualifier == "+":
            raise _PermError(
                f"The SPF record at {target} ends in +all, so {term} in the SPF record at "
                f"{name} lets anyone on the internet send as your domain: remove {term}, "
                f"or ask whoever runs {target} to end it in -all or ~all."
            )

    def _fetch(self, target: str, chain: list[str], *, via: str, referrer: str) -> SpfRecord:
        if target in chain:
            # §5.2/§6.1: receivers would recurse until the lookup limit: permerror.
            loop = " -> ".join([*chain, target])
            raise _PermError(
                f"SPF loop: {loop}. Receivers fail SPF for such a record: remove {via} "
                f"from the SPF record at {referrer}."
            )
        texts = dnsutil.txt(self.resolver, target)
        found = [t for t in texts if is_spf_record(t)]
        whose = (
            "our include host; the platform operator must publish it"
            if target == self.platform
            else "check the name"
        )
        if not texts:
            self.void.append(f"{via} (at {referrer})")
        if not found:
            # §5.2 (include) and §6.1 (redirect): a target without SPF is a permerror.
            raise _PermError(
                f"{via} in the SPF record at {referrer} points at {target}, which has no SPF "
                f"record ({whose}), so receivers fail SPF (RFC 7208 §5.2): fix or remove {via}."
            )
        if len(found) > 1:
            raise _PermError(
                f"{target} (from {via} at {referrer}) publishes {len(found)} SPF records, so "
                "receivers fail SPF (RFC 7208 §4.5): its owner must merge them into one."
            )
        self.records[target] = found[0]
        try:
            return parse_spf(found[0])
        except SpfSyntaxError as exc:
            raise _PermError(
                f"The SPF record at {target} (reached through {via} at {referrer}) is invalid: "
                f"{exc}"
            ) from None

    def _has_address(self, target: str) -> bool:
        return bool(dnsutil.resolve(self.resolver, target, "A")) or bool(
            dnsutil.resolve(self.resolver, target, "AAAA")
        )

    def _count(self) -> None:
        self.lookups += 1
        if self.lookups > _WALK_CEILING:
            self.truncated = True

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


def _normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


# -- the check -----------------------------------------------------------------------------


def check_spf(
    *,
    domain: str,
    resolver: dns.resolver.Resolver,
    platform_include: str,
    return_path_ok: bool | None,
) -> CheckResult:
    """Check the SPF record at the root of ``domain``.

    ``platform_include`` is the host tenants ``include:`` (settings.SENDMSG_SPF_INCLUDE);
    ``return_path_ok`` is the return-path check's verdict (None when it is unknown): when
    True, our mail already passes SPF aligned through ``rp.<domain>``, so the include is
    optional. Errors are what makes receivers fail SPF (permerror) or what lets anyone
    send; a DNS failure anywhere gives UNKNOWN. ``details`` holds the record, the lookup
    and void-lookup counts, the include chains, and ``includes_platform`` (True only when
    the record is usable and a receiver would reach our include through it).
    """
    domain = _normalize(domain)
    platform = _normalize(platform_include)
    suggestion = f'"v=spf1 include:{platform} ~all"'
    try:
        found = [t for t in dnsutil.txt(resolver, domain) if is_spf_record(t)]
        if not found:
            return _missing(domain, suggestion, return_path_ok)
        if len(found) > 1:
            return error(
                NAME,
                f"{domain} publishes {len(found)} SPF records (TXT records starting v=spf1). "
                "Receivers treat that as a permanent error (RFC 7208 §4.5), so SPF fails for "
                f"all mail from {domain}: merge them into one TXT record at {domain}.",
                records=found,
                includes_platform=False,
            )
        text = found[0]
        try:
            record = parse_spf(text)
        except SpfSyntaxError as exc:
            return error(
                NAME,
                f"The SPF record at {domain} is invalid: {exc} Receivers treat any syntax "
                "error as a permanent error (RFC 7208 §4.6), so SPF fails for all its mail.",
                record=text,
                includes_platform=False,
            )
        walk = _Walk(resolver=resolver, platform=platform)
        problems: list[str] = []
        effective_all = record.all  # what is known if the walk stops at a permerror
        try:
            effective_all = walk.run(domain, record)
        except _PermError as exc:
            problems.append(str(exc))
    except dnsutil.DnsFailure as exc:
        return unknown(NAME, f"Could not read the SPF record of {domain}: {exc}. Try again.")
    return _verdict(domain, record, text, walk, problems, effective_all, return_path_ok)


_RETURN_PATH_STATE = {
    False: "the return path does not align SPF for our mail either",
    None: "the return path could not be checked, so SPF alignment through it is unconfirmed",
}


def _missing(domain: str, suggestion: str, return_path_ok: bool | None) -> CheckResult:
    if return_path_ok:
        return warning(
            NAME,
            f"{domain} has no SPF record. Mail we send still passes SPF aligned through "
            f"your return path, but receivers also judge the domain itself: publish a TXT "
            f"record at {domain}: {suggestion}.",
            points=WARNING_POINTS,
            record=None,
            includes_platform=False,
        )
    return warning(
        NAME,
        f"{domain} has no SPF record, and {_RETURN_PATH_STATE[return_path_ok]}: publish a "
        f"TXT record at {domain}: {suggestion} (or set up the return path CNAME).",
        points=0.0,
        record=None,
        includes_platform=False,
    )


def _verdict(
    domain: str,
    record: SpfRecord,
    text: str,
    walk: _Walk,
    problems: list[str],
    effective_all: str | None,
    return_path_ok: bool | None,
) -> CheckResult:
    if walk.lookups > MAX_LOOKUPS:
        count = f"more than {_WALK_CEILING}" if walk.truncated else str(walk.lookups)
        problems.append(
            f"The SPF record at {domain} needs {count} DNS lookups (include, a, mx, ptr, "
            f"exists and redirect terms, counted through every include); receivers stop at "
            f"the limit of {MAX_LOOKUPS} and fail SPF (RFC 7208 §4.6.4): remove includes "
            f"you no longer use, or replace a/mx terms with ip4:/ip6: ranges, in the SPF "
            f"record at {domain}."
        )
    if len(walk.void) > MAX_VOID_LOOKUPS:
        problems.append(
            f"The SPF record at {domain} makes {len(walk.void)} lookups that find nothing "
            f"({'; '.join(walk.void)}); receivers allow {MAX_VOID_LOOKUPS} and then fail SPF "
            f"(RFC 7208 §4.6.4): remove the terms that point at names without records."
        )
    if effective_all == "+" and record.all == "+":
        problems.append(
            f"The SPF record at {domain} ends in +all, which lets anyone on the internet send "
            f"as {domain}: change +all to -all (or ~all) in the SPF record at {domain}."
        )
    elif effective_all == "+":
        problems.append(
            f"The SPF record at {domain} redirects to {record.redirect}, whose record ends in "
            f"+all, which lets anyone on the internet send as {domain}: point redirect= at a "
            "record that ends in -all or ~all."
        )
    includes_platform = walk.platform_path is not None and not problems
    warnings = list(walk.warnings)
    if effective_all == "?":
        warnings.append(
            f"The SPF record at {domain} ends in ?all (neutral), which tells receivers nothing "
            f"about mail from servers you did not list: change ?all to ~all or -all."
        )
    elif effective_all is None and record.effective_redirect is None:
        warnings.append(
            f"The SPF record at {domain} has no all term, so mail from servers you did not "
            f"list gets a neutral result: end the record with ~all or -all."
        )
    if record.after_all:
        terms = " ".join(str(t) for t in record.after_all)
        warnings.append(
            f"In the SPF record at {domain}, {terms} comes after all and is never evaluated "
            "(RFC 7208 §5.1): move it before all, or remove it."
        )
    for term in record.unknown_modifiers:
        if term.name in MECHANISMS:
            warnings.append(
                f'In the SPF record at {domain}, "{term}" is ignored: write '
                f'"{term.name}:{term.value}" (a colon, not "=").'
            )
    details = {
        "record": text,
        "all": effective_all,
        "lookups": walk.lookups,
        "lookup_limit": MAX_LOOKUPS,
        "void_lookups": len(walk.void),
        "void_terms": walk.void,
        "includes": walk.includes,
        "included_records": walk.records,
        "includes_platform": includes_platform,
        "platform_path": walk.platform_path,
        "terms": [str(t) for t in record.mechanisms],
    }
    if problems:
        return error(NAME, " ".join(problems + warnings), **details)
    if walk.platform_path is None:
        if return_path_ok:
            note = (
                f"It does not include our servers, which is fine: our mail passes SPF and "
                f"aligns through your return path, so include:{walk.platform} is optional."
            )
        else:
            warnings.append(
                f"The SPF record at {domain} does not include our servers, and "
                f"{_RETURN_PATH_STATE[return_path_ok]}: add include:{walk.platform} before "
                f"the all term (or set up the return path CNAME)."
            )
            note = ""
    else:
        note = f"It includes our servers ({' -> '.join(walk.platform_path)})."
    summary = f"The SPF record at {domain} is valid ({walk.lookups} of {MAX_LOOKUPS} DNS lookups)."
    if warnings:
        return warning(NAME, " ".join(warnings), points=WARNING_POINTS, **details)
    return ok(NAME, f"{summary} {note}".strip(), **details)
