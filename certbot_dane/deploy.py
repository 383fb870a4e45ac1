"""Pre-publish, gate, swap, reload, verify, retire: the rollover steps applied to DNS and disk.

Every run handles a batch of lineages (one for a hook, all for the timer) so that each zone
gets at most one UPDATE adding records and one removing them, whatever the number of lineages.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from certbot_dane import certificate, certstore, rollover, services, state, verify, zone
from certbot_dane.certstore import CertStore
from certbot_dane.config import Config, LineageSettings
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import CertError, DaneError, DnsError, VerifyFailed
from certbot_dane.records import Answer, Record
from certbot_dane.rollover import LineageState
from certbot_dane.tlsa import served_leaf_matches

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
    """What every step needs: settings, the DNS client, the certificate store and the clock."""

    config: Config
    client: DnsClient
    store: CertStore
    now: Callable[[], float] = time.time
    dry_run: bool = False
    log: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config, dry_run: bool = False) -> Rollout:
        """The real adapters for a configuration."""
        return cls(config, DnsClient(config.dns), CertStore(config.state_dir, config.deploy_dir), dry_run=dry_run)

    def say(self, lineage: str, text: str) -> None:
        """Record one line of the run's report (printed by the CLI, logged here)."""
        line = f"{lineage}: {'(dry run) ' if self.dry_run else ''}{text}"
        self.log.append(line)
        logger.info("%s", line)

    def fail(self, batch: Batch, names: Iterable[str], err: DaneError) -> None:
        """Record a failure for these lineages, keep it in their state, and drop them from the batch."""
        for name in list(names):
            lineage, st = batch.pop(name)
            self.failures[name] = str(err)
            self.save(replace(st, error=str(err)))

    def save(self, st: LineageState) -> LineageState:
        """Persist a state (never during a dry run)."""
        if not self.dry_run:
            state.save_lineage(self.config.state_dir, st)
        return st

    # -- DNS: one UPDATE per zone and direction for the whole batch ---------------------------
    def publish(self, batch: Batch) -> None:
        """Add every wanted record the primary does not serve yet (state written before the UPDATE)."""
        names = sorted({n for lineage, _ in batch.values() for n in lineage.tlsa})
        try:
            on_primary = zone.on_primary(self.client, names)
        except DnsError as err:
            self.fail(batch, batch, err)
            return
        adds: list[Record] = []
        for name, (lineage, st) in batch.items():
            seen = rollover.remember_ttl(st, max((on_primary[n].ttl or 0 for n in lineage.tlsa), default=0),
                                         self.now())
            if seen != st:
                st = self.save(seen)
                batch[name] = (lineage, st)
            missing = [n for n in lineage.tlsa if not set(rollover.wanted_values(st)) <= on_primary[n].values]
            if not missing:
                continue
            plan = rollover.publish_plan(st, tuple(missing), on_primary,
                                         zone.default_ttls(self.client, missing, lineage.tlsa_ttl))
            for record in plan.add:
                self.say(name, f"publish {record.name} TLSA {record.value[:14]}..")
            adds += plan.add
            if not self.dry_run:
                batch[name] = (lineage, self.save(rollover.record_published(st, plan.add, self.now())))
        if adds and not self.dry_run:
            fault_point("before-publish")
            self._apply(batch, add=adds)
            fault_point("after-publish")

    def retire(self, batch: Batch) -> None:
        """Remove our records that match nothing deployed or staged (state written after the UPDATE).

        A lineage whose certificate on disk is not the one its state says is deployed (changed by
        hand?) retires nothing: its records might be the ones senders need now (I2).
        """
        plans = {}
        for name, (lineage, st) in batch.items():
            on_disk = self.store.deployed_fingerprint(name)
            if st.deployed is not None and on_disk != st.deployed.fingerprint and not self.dry_run:
                self.say(name, f"not retiring: {self.store.live_dir(name)} holds certificate "
                               f"{(on_disk or 'none')[:16]}, not the deployed {st.deployed.fingerprint[:16]}")
                continue
            plan = rollover.retire_plan(st, lineage.tlsa)
            others = _sharing(self, lineage, batch)
            keep = {(n, v) for olin, ost in others.values() for n in set(olin.tlsa) & set(lineage.tlsa)
                    for v in rollover.wanted_values(ost)}
            plans[name] = replace(plan, remove=tuple(r for r in plan.remove if (r.name, r.value) not in keep))
        removes = [r for plan in plans.values() for r in plan.remove]
        for name, plan in plans.items():
            for record in plan.remove:
                self.say(name, f"retire {record.name} TLSA {record.value[:14]}..")
        if not removes or self.dry_run:
            return
        if not self._apply(batch, remove=removes):
            return
        fault_point("after-retire")
        for name, plan in plans.items():
            if plan.remove and name in batch:
                lineage, st = batch[name]
                batch[name] = (lineage, self.save(rollover.record_retired(st, plan.remove)))

    def _apply(self, batch: Batch, add: list[Record] | None = None, remove: list[Record] | None = None) -> bool:
        try:
            zone.apply(self.client, add=add or (), remove=remove or ())
        except DnsError as err:
            touched = {r.name for r in (add or remove or [])}
            self.fail(batch, [n for n, (lin, _) in batch.items() if touched & set(lin.tlsa)], err)
            return False
        return True

    # -- disk and services ---------------------------------------------------------------
    def go_live(self, lineage: LineageSettings, st: LineageState) -> LineageState:
        """Swap the staged version in atomically; the state is written right after the rename."""
        assert st.staged is not None
        target = self.store.live_dir(lineage.name)
        self.say(lineage.name, f"deploy certificate {st.staged.fingerprint[:16]} to {target}")
        if self.dry_run:
            return rollover.swapped(st)
        certs = self.store.read_staged(lineage.name, st.staged.fingerprint)
        fault_point("before-swap")
        self.store.swap(lineage.name, certs, lineage.key_group)
        fault_point("after-swap")
        st = self.save(rollover.swapped(st))
        self.store.prune_staging(lineage.name, None)
        return st

    def reload_and_verify(self, batch: Batch) -> None:
        """Reload each distinct command once for all swapped lineages, verify each, mark them verified."""
        swapped = {name: (lin, st) for name, (lin, st) in batch.items() if st.unverified}
        commands = list(dict.fromkeys(c for lin, _ in swapped.values() for c in lin.reload))
        if self.dry_run:
            for name, (lineage, st) in swapped.items():
                self.say(name, f"reload with {list(lineage.reload)} and verify {[str(v) for v in lineage.verify]}")
                batch[name] = (lineage, rollover.verified(st))  # show the rest of the plan as if they succeeded
            return
        failed: dict[str, DaneError] = {}
        for command in commands:
            try:
                services.reload(", ".join(n for n, (lin, _) in swapped.items() if command in lin.reload), [command])
            except DaneError as err:
                failed[command] = err
        fault_point("after-reload")
        for name, (lineage, st) in swapped.items():
            try:
                bad = next((failed[c] for c in lineage.reload if c in failed), None)
                if bad is not None:
                    raise bad
                self._verify(lineage, st)
            except DaneError as err:
                self.fail(batch, [name], err)
                continue
            if lineage.reload:
                self.say(name, f"services reloaded ({len(lineage.reload)} command(s))")
            assert st.deployed is not None
            self.store.prune_versions(name, {st.deployed.fingerprint})
            batch[name] = (lineage, self.save(rollover.verified(st)))

    def _verify(self, lineage: LineageSettings, st: LineageState) -> None:
        """Each endpoint must serve the deployed certificate, matching its published TLSA records."""
        assert st.deployed is not None
        for target in lineage.verify:
            name = f"_{target.port}._tcp.{target.host.lower()}."
            der = verify.served_certificate(target, lineage.verify_address)
            published = zone.on_primary(self.client, [name])[name].values | {
                p.value for p in st.published if p.name == name}
            live = set(st.deployed.records) & published
            if not live:
                raise VerifyFailed(f"{target}: no TLSA record of the deployed certificate is published at {name}; "
                                   "is this name in the lineage's tlsa list?")
            served = certificate.fingerprint_der(der)
            if not (served_leaf_matches(der, live) or served == st.deployed.fingerprint):
                raise VerifyFailed(f"{target} serves certificate {served[:16]}, not the deployed "
                                   f"{st.deployed.fingerprint[:16]} (was the service reloaded?); old TLSA records "
                                   "kept: DANE senders still accept the old certificate")
            self.say(lineage.name, f"verified {target}: serves the deployed certificate")

    # -- the steps after staging and gating, shared by hooks and the timer ----------------
    def finish(self, batch: Batch) -> None:
        """Publish what is missing, then settle."""
        self.publish(batch)
        self.settle(batch)

    def settle(self, batch: Batch) -> None:
        """Reload/verify swaps not yet verified, retire what is stale, clear the errors of the lineages
        for which all of it succeeded."""
        self.reload_and_verify(batch)
        self.retire(batch)
        for name, (lineage, st) in batch.items():  # every step of these succeeded this time
            if st.error is not None:
                batch[name] = (lineage, self.save(replace(st, error=None)))


def stage(rollout: Rollout, lineage: LineageSettings, certs: certificate.CertSet) -> LineageState:
    """Steps 1-2 on renewal: stage `certs` and pre-publish its records (bootstrap deploys at once).

    The caller holds the state directory's lock. Raises the first failure of the run.
    """
    batch: Batch = {lineage.name: (lineage, _stage(rollout, lineage, certs))}
    rollout.finish(batch)
    if rollout.failures:
        raise DaneError(next(iter(rollout.failures.values())))
    return batch[lineage.name][1]


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
                           tuple(r.to_text() for r in certificate.tlsa_records(certs, lineage.params)))
    st = current(rollout, lineage)
    try:
        on_primary: dict[str, Answer] | None = zone.on_primary(rollout.client, lineage.tlsa)
        dns_error = None
    except DnsError as err:  # stage anyway, so that nothing is lost; the next run publishes
        on_primary, dns_error = None, err
    shared_live = any(other.deployed is not None for _, other in _sharing(rollout, lineage, {}).values())
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
            rollout.say(lineage.name, f"no wait needed: {staged.staged.no_wait}")
            st = rollout.go_live(lineage, st)
    if dns_error is not None:
        raise dns_error
    return st


def _sharing(rollout: Rollout, lineage: LineageSettings, batch: Batch) -> Batch:
    """The other configured lineages that share a TLSA name with `lineage`, with their states."""
    names = set(lineage.tlsa)
    return {other.name: (other, batch[other.name][1] if other.name in batch
                         else state.load_lineage(rollout.config.state_dir, other.name))
            for other in rollout.config.lineages.values()
            if other.name != lineage.name and names & set(other.tlsa)}


def current(rollout: Rollout, lineage: LineageSettings) -> LineageState:
    """The lineage's state, reconciled with the certificate actually deployed (after a crash)."""
    st = state.load_lineage(rollout.config.state_dir, lineage.name)
    fixed = rollover.reconcile(st, rollout.store.deployed_fingerprint(lineage.name))
    if fixed != st:
        rollout.say(lineage.name, "the last run stopped after the swap; recording the deployed certificate")
        st = rollout.save(fixed)
    return st


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
    if found is not None and _newer_than_known(rollout, lineage.name, found, st):
        rollout.say(lineage.name, f"{live} holds a newer certificate than certbot-dane knows; staging it")
        return _stage(rollout, lineage, found)
    if st.deployed is None and st.staged is None:
        rollout.say(lineage.name, f"nothing deployed or staged, and no certificate in {live} yet")
        return None
    return st


def _gate(rollout: Rollout, batch: Batch, force: bool) -> None:
    """Observe every staged lineage's names on every server at once; swap those whose gate is open."""
    staged = {name: (lin, st) for name, (lin, st) in batch.items() if st.staged is not None}
    if not staged:
        return
    observed = zone.observe(rollout.client, sorted({n for lin, _ in staged.values() for n in lin.tlsa}))
    for name, (lineage, st) in staged.items():
        result = rollover.gate(st, {n: observed[n] for n in lineage.tlsa}, rollout.now())
        for lag in result.lagging:
            rollout.say(name, f"lagging: {lag}")
        st = rollout.save(rollover.with_gate(st, result))
        if result.ready or force:
            if not result.ready:
                rollout.say(name, f"EMERGENCY deploy before the gate ({result.reason}): DANE-validating senders "
                                  "that cached the old TLSA RRset will defer mail until it expires")
            try:
                st = rollout.go_live(lineage, st)
            except DaneError as err:
                batch[name] = (lineage, st)
                rollout.fail(batch, [name], err)
                continue
        else:
            when = f" until {utc(result.safe_at)}" if result.safe_at else ""
            rollout.say(name, f"not deploying yet: {result.reason}{when}")
        batch[name] = (lineage, st)


def deploy_all(rollout: Rollout, names: list[str] | None = None, force: bool = False) -> dict[str, str]:
    """Steps 3-6 for the named (default: every configured) lineages, under the lock.

    Converge DNS, deploy each staged version whose gate has opened, reload, verify, retire.
    Returns lineage name -> error for each lineage that failed; the others carry on.
    """
    batch: Batch = {}
    with state.locked(rollout.config.state_dir, wait=False):
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
            _gate(rollout, batch, force)
        except DnsError as err:
            rollout.fail(batch, batch, err)
        rollout.settle(batch)
    return rollout.failures
