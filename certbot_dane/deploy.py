"""The applier: performs the plans the pure core decides, phase by phase, for a batch of lineages.

Each phase asks the core for a plan (`plan.publish`, `rollover.gate` + `plan.swap`, `plan.reload`,
`plan.retire`) from what it observed, checks it, then applies it here: state written ahead of a DNS
change that adds (so that a crash never forgets what we published) and after one that removes,
fault points at every step boundary, and nothing at all under `--dry-run` except the report. Every
run handles a batch of lineages (one for a hook, all for the timer): each zone gets one UPDATE
adding records and one removing them, whatever the number of lineages.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from certbot_dane import boot, certificate, certstore, plan, rollover, schedule, services, state, timer, verify, zone
from certbot_dane.certstore import CertStore
from certbot_dane.config import Config, LineageSettings
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import CertError, DaneError, DnsError, StateError, VerifyFailed, WakeError
from certbot_dane.history import record_step
from certbot_dane.mtasts_io import publish_policies, refuse_swap
from certbot_dane.records import Answer
from certbot_dane.rollover import LineageState
from certbot_dane.tlsa import TlsaParams, load_chain, records_for, served_leaf_matches

logger = logging.getLogger(__name__)

#: Test-only fault points: CERTBOT_DANE_FAULT=<name> makes the process die (os._exit) right there.
FAULT_ENV = "CERTBOT_DANE_FAULT"

Batch = dict[str, tuple[LineageSettings, LineageState]]


def fault_point(name: str) -> None:
    """Die abruptly at a named step boundary when a test asks for it (simulates kill -9)."""
    if os.environ.get(FAULT_ENV) == name:
        os._exit(137)


def utc(moment: float) -> str:
    """A moment for humans: '2026-11-24 04:20:00 UTC'."""
    return f"{datetime.datetime.fromtimestamp(moment, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"


@dataclass
class Rollout:
    """What every phase needs: settings, the DNS client, the certificate store and the clock."""

    config: Config
    client: DnsClient
    store: CertStore
    now: Callable[[], float] = time.time
    dry_run: bool = False
    uptime: Callable[[], rollover.Uptime] = boot.uptime
    log: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    gates: dict[str, rollover.Gate] = field(default_factory=dict)  # this run's gate per staged lineage
    wake: schedule.Wake | None = None  # when the next run must happen (deploy_all with `wake`)
    wake_error: str | None = None      # why it could not be armed
    _owners: dict[str, str] = field(default_factory=dict, repr=False)
    _primary: dict[str, Answer] = field(default_factory=dict, repr=False)  # owner -> answer, until we change it

    @classmethod
    def from_config(cls, config: Config, dry_run: bool = False) -> Rollout:
        """The real adapters for a configuration."""
        return cls(config, DnsClient(config.dns), CertStore(config.state_dir, config.deploy_dir, config.monitor_group),
                   dry_run=dry_run)

    def say(self, lineage: str, text: str) -> None:
        """Record one line of the run's report (printed by the CLI, logged here); a stage, deploy or retire
        step also goes into the rollover history (`history`, read by `reports` and `status`)."""
        line = f"{lineage}: {'(dry run) ' if self.dry_run else ''}{text}"
        self.log.append(line)
        logger.info("%s", line)
        if not self.dry_run:
            record_step(self.config, lineage, text, self.now())

    def fail(self, batch: Batch, names: Iterable[str], err: DaneError) -> None:
        """Record a failure for these lineages, keep it in their state, and drop them from the batch."""
        for name in list(names):
            if name not in batch:
                continue
            lineage, st = batch.pop(name)
            self.failures[name] = str(err)
            self.save(replace(st, error=str(err)))

    def save(self, st: LineageState) -> LineageState:
        """Persist a state (never during a dry run)."""
        if not self.dry_run:
            state.save_lineage(self.config.state_dir, st, self.config.monitor_group)
        return st

    def instance(self) -> str:
        """This installation's id in ownership claims (made on first use, never by a dry run)."""
        return state.instance_id(self.config.state_dir, create=not self.dry_run, group=self.config.monitor_group)

    # -- observing ------------------------------------------------------------------------
    def owners(self, lineage: LineageSettings) -> tuple[str, ...]:
        """The owner names of a lineage's TLSA RRsets: its names, or where their CNAMEs lead (once a run)."""
        missing = [n for n in lineage.tlsa if n not in self._owners]
        for name, (owner, answer) in zone.owners(self.client, missing).items() if missing else ():
            self._owners[name] = owner
            self._primary.setdefault(owner, answer)
        return tuple(dict.fromkeys(self._owners[n] for n in lineage.tlsa))

    def _resolve(self, batch: Batch) -> dict[str, tuple[str, ...]]:
        """Owner names of every lineage in the batch; a lineage whose names cannot be followed fails."""
        found = {}
        for name, (lineage, _) in list(batch.items()):
            try:
                found[name] = self.owners(lineage)
            except DnsError as err:
                self.fail(batch, [name], err)
        return found

    def _sharing(self, lineage: LineageSettings, owners: Iterable[str], batch: Batch) -> Batch:
        """The other configured lineages that share an owner name with `lineage`, with their states."""
        mine = set(owners)
        found: Batch = {}
        for other in self.config.lineages.values():
            if other.name == lineage.name:
                continue
            try:
                theirs = set(self.owners(other))
            except DnsError:
                theirs = set(other.tlsa)
            if not mine & theirs:
                continue
            try:
                found[other.name] = (other, batch[other.name][1] if other.name in batch
                                     else state.load_lineage(self.config.state_dir, other.name))
            except StateError as err:
                logger.warning("%s: %s", other.name, err)
        return found

    def on_primary(self, owners: Iterable[str]) -> dict[str, Answer]:
        """What the primary serves at each owner: as seen earlier in this run, unless we changed it since."""
        self._primary.update(zone.on_primary(self.client, [o for o in owners if o not in self._primary]))
        return {o: self._primary[o] for o in owners}

    # -- publish: plan.publish, state written ahead of the UPDATE ----------------------------
    def publish(self, batch: Batch) -> None:
        """Add every wanted record the primary does not serve yet, and our claims (write-ahead state)."""
        owners = self._resolve(batch)
        every = sorted({o for name in batch for o in owners[name]})
        try:
            primary = self.on_primary(every)
        except DnsError as err:
            self.fail(batch, batch, err)
            return
        unknown = {o: a for o, a in primary.items() if not a.definite}
        for name in [n for n in batch if set(owners[n]) & set(unknown)]:
            owner = next(o for o in owners[name] if o in unknown)
            self.fail(batch, [name], DnsError(
                f"{self.client.settings.server} answered {unknown[owner].rcode} for {owner} TLSA: its RRset and "
                "TTL are unknown, so nothing is published or deployed for this lineage (see the server's log)"))
        intents = []
        try:
            for name, (lineage, st) in batch.items():
                seen = rollover.remember_ttl(st, max((primary[o].ttl or 0 for o in owners[name]), default=0),
                                             self.now(), self.uptime())
                if seen != st:
                    batch[name] = (lineage, self.save(seen))
                new_rrsets = [o for o in owners[name] if primary[o].ttl is None]
                ttls = zone.default_ttls(self.client, new_rrsets, lineage.tlsa_ttl) if new_rrsets else {}
                intents.append(plan.Intent(name, owners[name], batch[name][1], ttls))
            changes = plan.publish(intents, primary, zone.claims(self.client, plan.to_claim(intents, primary)),
                                   self.instance(), self.now())
        except DnsError as err:
            self.fail(batch, batch, err)
            return
        for name, text in changes.lines:
            self.say(name, text)
        for name, st in changes.ahead.items():
            batch[name] = (batch[name][0], self.save(st))
        if not changes.changes or self.dry_run:
            return
        fault_point("before-publish")
        if not self._apply(batch, changes):
            return
        fault_point("after-publish")
        for name, st in changes.states.items():  # our claims landed
            if name in batch:
                batch[name] = (batch[name][0], self.save(st))

    # -- gate: rollover.gate per staged lineage, then the swap -------------------------------
    def gate(self, batch: Batch, force: bool) -> None:
        """Observe every staged lineage's owners on every server at once; swap those whose gate is open."""
        staged = {name: (lin, st) for name, (lin, st) in batch.items() if st.staged is not None}
        if not staged:
            return
        owners = {name: self.owners(lin) for name, (lin, _) in staged.items()}
        observed = zone.observe(self.client, sorted({o for found in owners.values() for o in found}))
        for name, (lineage, st) in staged.items():
            result = rollover.gate(st, {o: observed[o] for o in owners[name]}, self.now(), self.uptime(),
                                   lineage.min_wait)
            self.gates[name] = result
            for lag in result.lagging:
                self.say(name, f"lagging: {lag}")
            st = self.save(rollover.with_gate(st, result, self.now()))
            batch[name] = (lineage, st)
            swap = plan.swap(st, result, force)
            if swap is None:
                when = f" until {utc(result.safe_at)}" if result.safe_at else ""
                self.say(name, f"not deploying yet: {result.reason}{when}")
                continue
            swap.check(st, result)
            try:
                refuse_swap(self, lineage, swap)  # MTA-STS: the staged certificate covers every MX host enforced
                batch[name] = (lineage, self.go_live(lineage, swap))
            except DaneError as err:
                self.fail(batch, [name], err)

    def go_live(self, lineage: LineageSettings, swap: plan.Swap) -> LineageState:
        """Apply a swap: the staged copy replaces the live files atomically; the state is written right after."""
        *warning, line = swap.lines
        for text in (*warning, f"{line} to {self.store.live_dir(lineage.name)}"):
            self.say(lineage.name, text)
        if self.dry_run:
            return swap.state
        certs = self.store.read_staged(lineage.name, swap.fingerprint)
        fault_point("before-swap")
        self.store.swap(lineage.name, certs, lineage.key_group)
        fault_point("after-swap")
        st = self.save(swap.state)
        self.store.prune_staging(lineage.name, None)
        return st

    # -- reload and verify ---------------------------------------------------------------
    def reload_and_verify(self, batch: Batch) -> None:
        """Apply `plan.reload`: each distinct command once for all swapped lineages, then verify each and
        prune its older versions; a lineage whose command or check failed stays unverified (retried next run)."""
        swapped = [(lineage, st) for lineage, st in batch.values() if st.unverified]
        on_disk = {lineage.name: self.store.deployed_fingerprint(lineage.name) for lineage, _ in swapped}
        todo = plan.reload(swapped, on_disk)
        todo.check({name: batch[name][1] for name in todo.states}, on_disk)
        if self.dry_run:
            for name, line in todo.lines:
                self.say(name, line)
                batch[name] = (batch[name][0], todo.states[name])  # show the rest of the plan as if they succeeded
            return
        failed: dict[str, DaneError] = {}
        for command, lineages in todo.commands:
            try:
                services.reload(", ".join(lineages), [command])
            except DaneError as err:
                failed[command] = err
        fault_point("after-reload")
        for name, after in todo.states.items():
            lineage, st = batch[name]
            try:
                bad = next((failed[c] for c in todo.needs(name) if c in failed), None)
                if bad is not None:
                    raise bad
                self._verify(lineage, st)
            except DaneError as err:
                self.fail(batch, [name], err)
                continue
            if lineage.reload:
                self.say(name, f"services reloaded ({len(lineage.reload)} command(s))")
            self.store.prune_versions(name, set(todo.keep[name]))
            batch[name] = (lineage, self.save(after))

    def _verify(self, lineage: LineageSettings, st: LineageState) -> None:
        """Each endpoint must serve the deployed certificate, matching its published TLSA records."""
        assert st.deployed is not None
        for target in lineage.verify:
            name = f"_{target.port}._tcp.{target.host.lower()}."
            owner = self._owners.get(name, name)
            der = verify.served_certificate(target, lineage.verify_address)
            published = zone.on_primary(self.client, [owner])[owner].values | {
                p.value for p in st.published if p.name == owner}
            live = set(st.deployed.records) & published
            if not live:
                raise VerifyFailed(f"{target}: no TLSA record of the deployed certificate is published at {owner}; "
                                   "is this name in the lineage's tlsa list?")
            served = certificate.fingerprint_der(der)
            if not (served_leaf_matches(der, live) or served == st.deployed.fingerprint):
                raise VerifyFailed(f"{target} serves certificate {served[:16]}, not the deployed "
                                   f"{st.deployed.fingerprint[:16]} (was the service reloaded?); old TLSA records "
                                   "kept: DANE senders still accept the old certificate")
            self.say(lineage.name, f"verified {target}: serves the deployed certificate")

    # -- retire: plan.retire, checked against the certificates on disk ----------------------
    def retire(self, batch: Batch) -> None:
        """Remove our records no lineage of this host wants, with the last claim on them (state written after).

        A lineage whose certificate on disk is not the one its state says is deployed (changed by
        hand?) retires nothing: its records might be the ones senders need now (I2).
        """
        intents = []
        for name, (lineage, st) in batch.items():
            on_disk = self.store.deployed_fingerprint(name)
            if st.deployed is not None and on_disk != st.deployed.fingerprint and not self.dry_run:
                self.say(name, f"not retiring: {self.store.live_dir(name)} holds certificate "
                               f"{(on_disk or 'none')[:16]}, not the deployed {st.deployed.fingerprint[:16]}")
                continue
            intents.append(plan.Intent(name, self.owners(lineage), st))
        keep, protected = self._keep(batch)
        candidates = plan.to_retire(intents, keep)
        if not candidates:
            return
        try:
            claims = zone.claims(self.client, candidates)
        except DnsError as err:
            self.fail(batch, [i.lineage for i in intents], err)
            return
        changes = plan.retire(intents, keep, claims, self.instance())
        changes.check(protected, {(p.name, p.value) for i in intents for p in i.state.published}, self.instance())
        for name, text in changes.lines:
            self.say(name, text)
        if self.dry_run or not self._apply(batch, changes):
            return
        fault_point("after-retire")
        for name, st in changes.states.items():
            if name in batch:
                batch[name] = (batch[name][0], self.save(st))

    def _keep(self, batch: Batch) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
        """Per owner, what some configured lineage of this host wants there (keep) and what a deployed
        certificate needs (protected: from the files on disk with today's params, whatever the state
        files say: I2). A lineage whose state cannot be read keeps everything of ours at its names."""
        lineages: list[tuple[Iterable[str], LineageState, Iterable[str]]] = []
        unknown: list[str] = []
        for lineage in self.config.lineages.values():
            try:
                st = batch[lineage.name][1] if lineage.name in batch else state.load_lineage(self.config.state_dir,
                                                                                             lineage.name)
            except StateError as err:
                logger.warning("%s: retiring nothing at its TLSA names: %s", lineage.name, err)
                unknown += lineage.tlsa
                continue
            if self.dry_run and lineage.name in batch:  # what the plan would have deployed by now
                live: Iterable[str] = st.deployed.records if st.deployed else ()
            else:
                deployed = certstore.read_dir(self.store.live_dir(lineage.name))
                live = _records(deployed, lineage) if deployed else ()
            try:
                owners: Iterable[str] = self.owners(lineage)
            except DnsError:
                owners = lineage.tlsa
            lineages.append((owners, st, live))
        keep, protected = plan.kept(lineages)
        for owner in unknown:
            keep[owner] = keep.get(owner, frozenset()) | {p.value for _, bst in batch.values()
                                                          for p in bst.published if p.name == owner}
        return keep, protected

    def _apply(self, batch: Batch, changes: plan.Plan) -> bool:
        """Send a plan's DNS changes; on failure, fail the lineages whose names it touched."""
        self._primary.clear()
        try:
            zone.apply(self.client, add=changes.add, remove=changes.remove, require=changes.require)
        except DnsError as err:
            touched = {plan.owner_of_claim(r.name) or r.name for r in (*changes.add, *changes.remove)}
            self.fail(batch, [n for n, (lin, _) in batch.items() if touched & set(self.owners(lin))], err)
            return False
        return True

    # -- the phases after staging and gating, shared by hooks and the timer ----------------
    def settle(self, batch: Batch) -> None:
        """Reload/verify swaps not yet verified, retire what is stale, clear the errors of the lineages
        for which all of it succeeded."""
        self.reload_and_verify(batch)
        self.retire(batch)
        for name, (lineage, st) in batch.items():  # every step of these succeeded this time
            if st.error is not None:
                batch[name] = (lineage, self.save(replace(st, error=None)))


def stage(rollout: Rollout, lineage: LineageSettings, certs: certificate.CertSet) -> LineageState:
    """Steps 1-2 on renewal: stage `certs` and pre-publish its records; a version that needs no wait
    (bootstrap, same key) goes live once its records are published.

    The lineages sharing an owner name with this one publish in the same UPDATE: a record of theirs
    missing from the RRset (their own UPDATE failed) must not be left out of the RRset this one creates.
    The caller holds the state directory's lock. Raises this lineage's failure, if any. Asks for a
    deploy run (`timer.request`) once something is staged: the gate's clock starts when that run sees
    every server serve the records, and a DNS step that failed here is retried by it.
    """
    try:
        st = _stage_and_publish(rollout, lineage, certs)
    except (CertError, StateError):
        raise  # refused, or the disk did not take it: nothing staged, nothing for a deploy run to do
    except DaneError:
        if not rollout.dry_run:
            timer.request(rollout.config.state_dir)
        raise
    if not rollout.dry_run:
        timer.request(rollout.config.state_dir)
    return st


def _stage_and_publish(rollout: Rollout, lineage: LineageSettings, certs: certificate.CertSet) -> LineageState:
    st = _stage(rollout, lineage, certs)
    batch: Batch = {lineage.name: (lineage, st)}
    try:
        sharing = rollout._sharing(lineage, rollout.owners(lineage), batch)
    except DnsError:
        sharing = {}
    everyone = {**{n: v for n, v in sharing.items() if v[1].deployed or v[1].staged}, **batch}
    rollout.publish(everyone)
    if lineage.name in everyone:
        batch = {lineage.name: everyone[lineage.name]}
        staged = batch[lineage.name][1].staged
        if staged is not None and staged.no_wait:
            try:
                rollout.gate(batch, force=False)
            except DnsError as err:
                rollout.fail(batch, batch, err)
        rollout.settle(batch)
    if lineage.name in rollout.failures:
        raise DaneError(rollout.failures[lineage.name])
    return batch[lineage.name][1] if lineage.name in batch else st


def _stage(rollout: Rollout, lineage: LineageSettings, certs: certificate.CertSet) -> LineageState:
    now = rollout.now()
    found = certificate.problems(certs, datetime.datetime.fromtimestamp(now, datetime.UTC))
    if found:
        raise CertError(f"{lineage.name}: refusing the new certificate: {'; '.join(found)}")
    cert_info = certificate.info(certs.cert)
    uncovered = [h for h in lineage.hosts if not certificate.covers(cert_info.names, h)]
    if uncovered:
        logger.warning("%s: the certificate does not cover %s, named by its TLSA names; "
                       "DANE-EE does not check names, but check the configuration", lineage.name, ", ".join(uncovered))
    new = rollover.Version(cert_info.fingerprint,
                           _records(certs, lineage))
    st = current(rollout, lineage)
    try:
        owners = rollout.owners(lineage)
        on_primary: dict[str, Answer] | None = rollout.on_primary(owners)
        dns_error = None
    except DnsError as err:  # stage anyway, so that nothing is lost; the next run publishes
        owners, on_primary, dns_error = lineage.tlsa, None, err
    shared_live = any(other.deployed is not None for _, other in rollout._sharing(lineage, owners, {}).values())
    staged = rollover.stage(st, new, on_primary, now, shared_live)
    if staged == st:
        rollout.say(lineage.name, f"certificate {new.fingerprint[:16]} is already deployed or staged")
    else:
        if not rollout.dry_run:
            rollout.store.stage(lineage.name, certs)
            fault_point("after-stage-files")
        assert staged.staged is not None
        rollout.say(lineage.name, f"staged certificate {new.fingerprint[:16]} in "
                                  f"{rollout.store.staged_dir(lineage.name, new.fingerprint)}")
        st = rollout.save(staged)
        if not rollout.dry_run:  # only once the state names the new copy may the older ones go
            rollout.store.prune_staging(lineage.name, new.fingerprint)
        if staged.staged.no_wait:
            rollout.say(lineage.name, f"no wait needed once its records are published: {staged.staged.no_wait}")
    if dns_error is not None:
        rollout.save(replace(st, error=str(dns_error)))
        raise dns_error
    return st


def current(rollout: Rollout, lineage: LineageSettings) -> LineageState:
    """The lineage's state, reconciled with the certificates actually on disk.

    After a crash past the swap, the staged version is the deployed one. Each version's records
    are recomputed from its certificate with today's params (a changed config, an edited state file).
    """
    st = state.load_lineage(rollout.config.state_dir, lineage.name)
    fixed = rollover.reconcile(st, rollout.store.deployed_fingerprint(lineage.name))
    if fixed != st:
        rollout.say(lineage.name, "the last run stopped after the swap; recording the deployed certificate")
    deployed = certstore.read_dir(rollout.store.live_dir(lineage.name)) if fixed.deployed else None
    staged = None
    if fixed.staged is not None:
        try:
            staged = rollout.store.read_staged(lineage.name, fixed.staged.fingerprint)
        except StateError:
            staged = None  # reported when the swap needs it
    refreshed = rollover.refresh(
        fixed,
        _records(deployed, lineage) if deployed and fixed.deployed
        and certificate.fingerprint(deployed.cert) == fixed.deployed.fingerprint else None,
        _records(staged, lineage) if staged else None)
    if refreshed != fixed:
        rollout.say(lineage.name, "records recomputed from the certificates on disk with params "
                                  f"{', '.join(str(p) for p in lineage.params)}")
    if refreshed != st:
        rollout.save(refreshed)
    return refreshed


def _records(certs: certificate.CertSet, lineage: LineageSettings) -> tuple[str, ...]:
    """The lineage's records for these certificate files with today's params."""
    return _chain_records(certs.fullchain, lineage.params)


@functools.lru_cache(maxsize=4096)
def _chain_records(fullchain: bytes, params: tuple[TlsaParams, ...]) -> tuple[str, ...]:
    """(Memoised: every run reads each deployed certificate twice, the timer once a minute.)"""
    return tuple(r.to_text() for r in records_for(params, load_chain(fullchain)))


def _newer_than_known(rollout: Rollout, lineage: str, found: certificate.CertSet, st: LineageState) -> bool:
    """Whether certbot's current certificate is newer than the deployed and the staged one."""
    candidate = certificate.info(found.cert)
    if candidate.fingerprint in [v.fingerprint for v in (st.deployed, st.staged) if v is not None]:
        return False
    copies = [rollout.store.read_staged(lineage, st.staged.fingerprint)] if st.staged else []
    deployed = certstore.read_dir(rollout.store.live_dir(lineage))
    copies += [deployed] if deployed else []
    return all(certificate.info(c.cert).not_before < candidate.not_before for c in copies)


def _load(rollout: Rollout, lineage: LineageSettings) -> LineageState | None:
    """The lineage's state, first staging a certificate in certbot's live/ newer than anything known.

    That covers a lineage never seen (`certbot certonly -i dane` calls no installer) and a
    renewal whose hook did not run or was killed. None when there is nothing to manage yet.
    """
    st = current(rollout, lineage)
    live = rollout.config.letsencrypt_dir / "live" / lineage.name
    found = certstore.read_dir(live)
    try:
        newer = found is not None and _newer_than_known(rollout, lineage.name, found, st)
    except ValueError as err:
        raise CertError(f"{lineage.name}: cannot parse {live}/cert.pem: {err}") from err
    if found is not None and newer:
        rollout.say(lineage.name, f"{live} holds a newer certificate than certbot-dane knows; staging it")
        return _stage(rollout, lineage, found)
    if st.deployed is None and st.staged is None:
        rollout.say(lineage.name, f"nothing deployed or staged, and no certificate in {live} yet")
        return None
    return st


def deploy_all(rollout: Rollout, names: list[str] | None = None, force: bool = False,
               wake: str | None = None) -> dict[str, str]:
    """Steps 3-6 for the named (default: every configured) lineages, under the lock.

    Converge DNS, deploy each staged version whose gate has opened, reload, verify, retire.
    Returns lineage name -> error for each lineage that failed; the others carry on.

    A run of every lineage answers the request a staging left (`timer.request`). With `wake` ("none" or
    "systemd", see `timer`) it then decides when the next run must happen (`schedule.next_wake`, in
    `rollout.wake`), remembers it and, with "systemd", arms a timer for it (`rollout.wake_error` if that
    failed); a "systemd" run waits for the lock instead of giving up (a hook holds it while staging).
    """
    batch: Batch = {}
    whole = not names and not rollout.dry_run
    with state.locked(rollout.config.state_dir, wait=wake == "systemd", clean=not rollout.dry_run,
                      group=None if rollout.dry_run else rollout.config.monitor_group):
        if whole:
            timer.consume(rollout.config.state_dir)
        for name in names or sorted(rollout.config.lineages):
            lineage = rollout.config.lineages[name]
            try:
                st = _load(rollout, lineage)
            except DaneError as err:
                rollout.failures[name] = str(err)
                continue
            if st is not None:
                batch[name] = (lineage, st)
        rollout.publish(batch)
        try:
            rollout.gate(batch, force)
        except DnsError as err:
            rollout.fail(batch, batch, err)
        rollout.settle(batch)
        if not names:
            publish_policies(rollout)  # MTA-STS policy files and TXT records, after the lineages' phases
        if wake is not None and whole:
            _schedule(rollout, batch, wake)
    return rollout.failures


def _schedule(rollout: Rollout, batch: Batch, mode: str) -> None:
    """Decide the next run from this run's gates and failures, remember it and (systemd) arm it."""
    previous = timer.load(rollout.config.state_dir)
    not_checked = rollover.Gate(False, None, None, "gate not checked this run")
    waiting = {name: (st, rollout.gates.get(name, not_checked)) for name, (_, st) in batch.items()
               if st.staged is not None}
    now = rollout.now()
    rollout.wake = schedule.next_wake(waiting, rollout.failures, now, previous[0].failures if previous else 0)
    try:
        timer.commit(rollout.config.state_dir, rollout.wake, mode, now)
    except (WakeError, StateError) as err:
        rollout.wake_error = str(err)
