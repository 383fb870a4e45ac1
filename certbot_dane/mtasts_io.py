"""MTA-STS at the edges: the policy file, the policy host over HTTPS, the TXT records through `zone`, and the
MX hosts over SMTP STARTTLS, as a sender sees them.

`publish_policies` is one step of a deploy run (after the lineages' phases): per configured domain, write the
policy file when the intended policy changed, fetch it back from every address of `mta-sts.<domain>`
(HTTPS, certificate validated against the configured or system CA bundle, as senders fetch it), and only
once each serves exactly that text plan the `_mta-sts` id (and the `_smtp._tls` record) with
`mtasts.records`; all domains' changes go out through `zone.apply`, one UPDATE per zone. `refuse_swap` is
the check the applier consults before a swap. `observe` gathers what `status` reports.
"""

from __future__ import annotations

import datetime
import http.client
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from certbot_dane import certificate, certstore, compat, mtasts, mtastsreport, state, verify, zone
from certbot_dane.config import Config, Endpoint, LineageSettings, MtaStsSettings, VerifyTarget
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import DaneError, DnsError, MtaStsError, StateError, VerifyFailed
from certbot_dane.mtasts import Held
from certbot_dane.mtastsreport import MxSeen, Observation, PolicyServed
from certbot_dane.records import Answer, NoAnswer

if TYPE_CHECKING:  # the applier passes itself in; importing it here would be a cycle
    from certbot_dane.deploy import Rollout
    from certbot_dane.plan import Swap

logger = logging.getLogger(__name__)

HTTPS_PORT = 443
SMTP_PORT = 25
HISTORY_DIR = "mta-sts"


# -- the policy host -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fetched:
    """What one address of `mta-sts.<domain>` served at the policy URL."""

    address: str
    text: str | None                         # the policy file (None: nothing acceptable was served)
    error: str | None = None                 # why not, as a sender would reject it
    not_after: datetime.datetime | None = None  # the HTTPS certificate's end of validity (even when it is invalid)


def fetch(domain: str, address: str, ca_file: Path | None, timeout: float) -> Fetched:
    """GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt from `address` as a sender does (RFC 8461 §3.3):
    certificate validated for the host name, HTTP 200, text/plain, no redirect followed."""
    host = mtasts.policy_host(domain)
    where = f"{mtasts.policy_url(domain)} at {address}"
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    request = (f"GET {mtasts.POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: certbot-dane\r\n"
               "Accept: text/plain\r\nConnection: close\r\n\r\n").encode("ascii")
    try:
        with socket.create_connection((address, HTTPS_PORT), timeout=timeout) as sock, \
                context.wrap_socket(sock, server_hostname=host) as tls:
            not_after = _not_after(tls.getpeercert(binary_form=True))
            tls.sendall(request)
            response = http.client.HTTPResponse(tls, method="GET")
            response.begin()
            body = response.read(mtasts.MAX_POLICY_BYTES + 1)
            kind = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    except ssl.SSLCertVerificationError as err:
        return Fetched(address, None, f"{where}: certificate not valid: {err.verify_message}",
                       _unverified_not_after(address, host, timeout))
    except (OSError, http.client.HTTPException) as err:
        return Fetched(address, None, f"{where}: cannot fetch the policy: {err or type(err).__name__}")
    problem = (f"HTTP {response.status} {response.reason}" if response.status != 200 else
               f"Content-Type {kind or 'missing'}, not text/plain" if kind != "text/plain" else
               f"larger than {mtasts.MAX_POLICY_BYTES} bytes" if len(body) > mtasts.MAX_POLICY_BYTES else None)
    if problem is None:
        try:
            return Fetched(address, body.decode("utf-8"), None, not_after)
        except UnicodeDecodeError:
            problem = "not UTF-8 text"
    return Fetched(address, None, f"{where}: {problem}", not_after)


def _not_after(der: bytes | None) -> datetime.datetime | None:
    return compat.not_valid_after(x509.load_der_x509_certificate(der)) if der else None


def _unverified_not_after(address: str, host: str, timeout: float) -> datetime.datetime | None:
    """The end of validity of a certificate that did not validate (to say when it expired)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((address, HTTPS_PORT), timeout=timeout) as sock, \
                context.wrap_socket(sock, server_hostname=host) as tls:
            return _not_after(tls.getpeercert(binary_form=True))
    except (OSError, ValueError):
        return None


def addresses(client: DnsClient, host: str, resolver: Endpoint | None = None) -> tuple[list[str], str]:
    """Every A and AAAA address of `host` (from `resolver`, else the primary), and why there are none."""
    questions = [(resolver or client.settings.server, host.rstrip(".") + ".", t) for t in ("A", "AAAA")]
    replies = (zone.resolve if resolver else zone.ask)(client, questions)
    found = sorted(v for r in replies.values() if isinstance(r, Answer) for v in r.values)
    why = "; ".join(r.describe() for r in replies.values()) or "no address"
    return found, f"no A or AAAA address for {host} ({why})"


def mx_rrset(client: DnsClient, domain: str) -> tuple[str, ...] | None:
    """The domain's MX hosts as the primary serves them (empty: none); None when the primary cannot say."""
    try:
        answer = zone.from_primary(client, [domain + "."], "MX")[domain + "."]
    except DnsError:
        return None
    return mtasts.mx_hosts(answer.values) if answer.definite else None


# -- what senders may still hold: the policies a write replaced --------------------------------------------
def _history_path(cfg: Config, domain: str) -> Path:
    return cfg.state_dir / HISTORY_DIR / f"{domain}.json"


def history(cfg: Config, domain: str) -> list[Held]:
    """The replaced policies of `domain` (with the moment senders' caches of them run out)."""
    found = []
    for entry in state.read_json(_history_path(cfg, domain), {}).get("replaced", []):
        try:
            found.append(Held(domain, mtasts.parse_policy(entry["text"]), float(entry["until"])))
        except (KeyError, TypeError, ValueError):
            logger.warning("%s: ignoring a malformed entry of %s", domain, _history_path(cfg, domain))
    return found


def _remember(cfg: Config, domain: str, held: Sequence[Held]) -> None:
    state.write_json(_history_path(cfg, domain), {"replaced": [
        {"text": h.policy.text(), "until": h.until} for h in held]}, group=cfg.monitor_group)


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")  # as served: no newline translation (the policy has CRLF lines)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise MtaStsError(f"cannot read the policy file {path}: {err}") from err


def _write(path: Path, text: str) -> None:
    """Replace the policy file atomically (readers see the old or the new text), readable by the web server."""
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        state.atomic_write(path, text.encode("utf-8"), mode=0o644)
    except (OSError, StateError) as err:
        raise MtaStsError(f"cannot write the policy file {path}: {err}") from err


# -- deploy ---------------------------------------------------------------------------------------------
def publish_policies(rollout: Rollout) -> None:
    """Bring every configured domain's policy file, `_mta-sts` id and `_smtp._tls` record in step; a domain
    that fails is reported in `rollout.failures` as `mta-sts DOMAIN`, the others carry on."""
    cfg = rollout.config
    planned: dict[str, mtasts.Changes] = {}
    for domain, settings in sorted(cfg.mta_sts.items()):
        label = f"mta-sts {domain}"
        try:
            changes, error = _domain(rollout, settings, label)
        except DaneError as err:
            rollout.failures[label] = str(err)
            continue
        planned[domain] = changes
        for line in changes.lines:
            rollout.say(label, line)
        if error is not None:
            rollout.failures[label] = error
    sending = {d: c for d, c in planned.items() if c.add or c.remove}
    if not sending or rollout.dry_run:
        return
    try:
        zone.apply(rollout.client, add=[r for c in sending.values() for r in c.add],
                   remove=[r for c in sending.values() for r in c.remove],
                   require=[r for c in sending.values() for r in c.require])
    except DnsError as err:
        for domain in sending:
            rollout.failures[f"mta-sts {domain}"] = f"the TXT records were not changed: {err}"


def _domain(rollout: Rollout, settings: MtaStsSettings, label: str) -> tuple[mtasts.Changes, str | None]:
    """One domain: write the file if the policy changed, check what is served, plan the TXT records."""
    cfg, client, domain = rollout.config, rollout.client, settings.domain
    mx = mx_rrset(client, domain)
    if mx is None:
        raise MtaStsError(f"{client.settings.server} did not say what the MX RRset of {domain} is: nothing was "
                          "changed (the policy must match every MX host)")
    try:
        policy = mtasts.intended(settings, mx)
    except ValueError as err:
        raise MtaStsError(str(err)) from err
    text = policy.text()
    current = _read(settings.policy_file)
    unsafe = mtasts.unsafe(policy, mx, _deployed_names(rollout)) if current != text else []
    if unsafe:
        raise MtaStsError(f"refusing to publish policy id {policy.id} (enforce): {'; '.join(unsafe)}; senders "
                          "holding it would refuse that host. The policy file and the TXT record stay as they are")
    if current != text:
        rollout.say(label, f"write policy id {policy.id} ({policy.mode}, mx {', '.join(policy.mx) or '-'}, "
                           f"max_age {policy.max_age}) to {settings.policy_file}")
        if not rollout.dry_run:
            now = rollout.now()
            held = [*mtasts.still_held(history(cfg, domain), now)]
            old = mtasts.replaced(current, policy, domain, now)
            _remember(cfg, domain, [*held, *([old] if old else [])])  # before the file changes
            _write(settings.policy_file, text)
    wrong: list[Fetched] = []
    if rollout.dry_run and current != text:  # the plan as if the file had been written and served (no fetch)
        rollout.say(label, f"once every address of {mtasts.policy_host(domain)} serves it:")
    else:
        found, why = addresses(client, mtasts.policy_host(domain))
        fetched = _each(lambda a: fetch(domain, a, settings.ca_file, cfg.status.endpoint_timeout), found) \
            if found else []
        wrong = [f for f in fetched if f.text != text] or ([] if found else [Fetched("-", None, why)])
    answers = zone.from_primary(client, [mtasts.sts_name(domain), mtasts.tlsrpt_name(domain)], "TXT")
    sts, tlsrpt = answers[mtasts.sts_name(domain)], answers[mtasts.tlsrpt_name(domain)]
    for name, answer in answers.items():
        if not answer.definite:
            raise MtaStsError(f"{client.settings.server} answered {answer.rcode} for {name} TXT: nothing changed")
    fresh = [n for n, a in answers.items() if a.ttl is None]
    ttls = zone.default_ttls(client, fresh, None) if fresh else {}
    changes = mtasts.records(domain, None if wrong else policy.id, sts, settings.tlsrpt, tlsrpt, ttls)
    if not wrong:
        return changes, None
    first = wrong[0]
    seen = first.error or (f"serves policy id {mtasts.policy_id(first.text)}, not {policy.id}" if first.text
                           else "serves nothing")
    if first.error is None:
        seen = f"{mtasts.policy_url(domain)} at {first.address} {seen}"
    return changes, (f"{seen}; the _mta-sts TXT record stays at id {mtasts.served_id(sts) or '(none)'} until "
                     f"every address serves policy id {policy.id}")


def _deployed_names(rollout: Rollout) -> dict[str, tuple[str, ...]]:
    """Host -> the names of the certificate deployed for it, for every configured lineage (from the files)."""
    found: dict[str, tuple[str, ...]] = {}
    for lineage in rollout.config.lineages.values():
        deployed = certstore.read_dir(rollout.store.live_dir(lineage.name), private=False)
        try:
            names = certificate.info(deployed.cert).names if deployed is not None else None
        except ValueError:  # an unparsable certificate fails its own lineage; status names it
            names = None
        if names is not None:
            found.update(dict.fromkeys(lineage.hosts, names))
    return found


def _each(job: Callable[[str], Fetched], found: Sequence[str]) -> list[Fetched]:
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(found)))) as pool:
        return list(pool.map(job, found))


def refuse_swap(rollout: Rollout, lineage: LineageSettings, swap: Swap) -> None:
    """MtaStsError (one line naming the host) when the staged certificate does not cover an MX host of this
    lineage that a policy senders may hold in enforce mode matches: the current one, the one in the file,
    and the ones a write replaced less than their max_age ago."""
    cfg = rollout.config
    if not cfg.mta_sts:
        return
    names = certificate.info(rollout.store.read_staged(lineage.name, swap.fingerprint).cert).names
    held: list[Held] = []
    mx: dict[str, tuple[str, ...] | None] = {}
    for domain, settings in cfg.mta_sts.items():
        mx[domain] = mx_rrset(rollout.client, domain)
        try:
            held.append(Held(domain, mtasts.intended(settings, mx[domain])))
        except ValueError:
            pass
        try:
            held.append(Held(domain, mtasts.parse_policy(_read(settings.policy_file) or "")))
        except ValueError:
            pass
        held += mtasts.still_held(history(cfg, domain), rollout.now())
    refused = mtasts.refusal(swap.fingerprint, lineage.hosts, names, held, mx)
    if refused is not None:
        raise MtaStsError(refused)


# -- status ---------------------------------------------------------------------------------------------
def observe(cfg: Config, client: DnsClient, resolver: Endpoint | None = None) -> tuple[Observation, ...]:
    """What `status` reports per domain (read-only): the MX RRset and both TXT RRsets on the primary, the
    policy at every address of `mta-sts.<domain>` and a STARTTLS handshake validated as a sender validates it
    with every address of every MX host. Addresses come from `resolver` (a sender's view) when given."""
    return tuple(_observe(cfg, client, settings, resolver) for _, settings in sorted(cfg.mta_sts.items()))


def _observe(cfg: Config, client: DnsClient, settings: MtaStsSettings, resolver: Endpoint | None) -> Observation:
    domain, timeout = settings.domain, cfg.status.endpoint_timeout
    names = [domain + ".", mtasts.sts_name(domain), mtasts.tlsrpt_name(domain)]
    replies = zone.ask(client, [(client.settings.server, n, t) for n, t in zip(names, ("MX", "TXT", "TXT"),
                                                                             strict=True)])
    mx_answer, sts, tlsrpt = (replies[(client.settings.server, n, t)] for n, t in
                              zip(names, ("MX", "TXT", "TXT"), strict=True))
    problems = [f"{client.settings.server}: {r.describe()} for {n}" for (_, n, _), r in replies.items()
                if isinstance(r, NoAnswer) or not r.definite]
    mx = mtasts.mx_hosts(mx_answer.values) if isinstance(mx_answer, Answer) and mx_answer.definite else None
    found, why = addresses(client, mtasts.policy_host(domain), resolver)
    jobs: list[Callable[[], PolicyServed | MxSeen]] = [
        (lambda a=a: _served(fetch(domain, a, settings.ca_file, timeout))) for a in found]  # type: ignore[misc]
    for host in mx or ():
        hosts, none = addresses(client, host, resolver)
        jobs += [(lambda h=host, a=a: _mx(h, a, settings.ca_file, timeout)) for a in hosts]  # type: ignore[misc]
        if not hosts:
            jobs.append(lambda h=host, why=none: MxSeen(h, "-", False, None, why))  # type: ignore[misc]
    with ThreadPoolExecutor(max_workers=max(1, min(zone.WORKERS, len(jobs)))) as pool:
        results = list(pool.map(lambda job: job(), jobs))
    return Observation(settings, mx, tuple(r for r in results if isinstance(r, PolicyServed)),
                       sts if isinstance(sts, Answer) and sts.definite else None,
                       tlsrpt if isinstance(tlsrpt, Answer) and tlsrpt.definite else None,
                       tuple(r for r in results if isinstance(r, MxSeen)),
                       "; ".join(problems) or None, None if found else why)


def _served(fetched: Fetched) -> PolicyServed:
    return PolicyServed(fetched.address, fetched.text, fetched.error, fetched.not_after)


def _mx(host: str, address: str, ca_file: Path | None, timeout: float) -> MxSeen:
    """An MTA-STS sender's check of one MX address: STARTTLS on port 25, chain validated for the host name."""
    target = VerifyTarget("smtp", host, SMTP_PORT)
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        return MxSeen(host, address, True, verify.served_chain(target, address, timeout=timeout, context=context)[0])
    except VerifyFailed as err:
        if not isinstance(err.__cause__, ssl.SSLCertVerificationError):
            return MxSeen(host, address, False, None, str(err))
        try:
            leaf: bytes | None = verify.served_certificate(target, address, timeout=timeout)
        except VerifyFailed:
            leaf = None
        return MxSeen(host, address, False, leaf,
                      f"{target} (at {address}): certificate not valid: {err.__cause__.verify_message}")


def mta_sts_reports(cfg: Config, client: DnsClient, now: float,
                    resolver: Endpoint | None = None) -> tuple[mtastsreport.DomainReport, ...]:
    """`status`'s `mta_sts` section: each configured domain observed (`observe`) and assessed (pure)."""
    return tuple(mtastsreport.assess(seen, now) for seen in observe(cfg, client, resolver))
