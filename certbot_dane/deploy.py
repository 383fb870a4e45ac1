"""Pre-publish, gate, swap, reload, verify, retire: the rollover steps applied to DNS and disk."""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from certbot_dane import certificate, certstore, rollover, services, state, verify, zone
from certbot_dane.certstore import CertStore
from certbot_dane.config import Config, LineageSettings
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import CertError, DaneError, DnsError, VerifyFailed
from certbot_dane.records import Answer
from certbot_dane.rollover import LineageState, Plan
from certbot_dane.tlsa import served_leaf_matches

logger = logging.getLogger(__name__)

#: Test-only fault points: CERTBOT_DANE_FAULT=<name> makes the process die (os._exit) right there.
FAULT_ENV = "CERTBOT_DANE_FAULT"


def fault_point(name: str) -> None:
    """Die abruptly at a named step boundary when a test asks for it (simulates kill -9)."""
    if os.environ.get(FAULT_ENV) == name:
        os._exit(137)


@dataclass
class Rollout:
    """What every step needs: settings, the DNS client, the certificate store and the clock."""

    config: Config
    client: DnsClient
    store: CertStore
    now: Callable[[], float] = time.time
    dry_run: bool = False
    log: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: Config, dry_run: bool = False) -> Rollout:
        """The real adapters for a configuration."""
        return cls(config, DnsClient(config.dns), CertStore(config.state_dir, config.deploy_dir), dry_run=dry_run)

    def say(self, lineage: str, text: str) -> None:
        """Record one line of the run's report (printed by the CLI, logged here)."""
        line = f"{lineage}: {'(dry run) ' if self.dry_run else ''}{text}"
        self.log.append(line)
        logger.info("%s", line)

    def save(self, st: LineageState) -> LineageState:
        """Persist a state (never during a dry run)."""
        if not self.dry_run:
            state.save_lineage(self.config.state_dir, st)
        return st

    # -- DNS -----------------------------------------------------------------------------
    def publish(self, lineage: LineageSettings, st: LineageState) -> LineageState:
        """Add every wanted record the primary does not serve yet (state written before the UPDATE)."""
        on_primary = zone.on_primary(self.client, lineage.tlsa)
        missing = [n for n in lineage.tlsa if not set(rollover.wanted_values(st)) <= on_primary[n].values]
        ttls = zone.default_ttls(self.client, missing, lineage.tlsa_ttl)
        plan = rollover.publish_plan(st, tuple(missing), on_primary, ttls)
        if not plan.add:
            return st
        self._describe(lineage.name, "publish", plan)
        if self.dry_run:
            return st
        st = self.save(rollover.record_published(st, plan.add, self.now()))
        fault_point("before-publish")
        zone.apply(self.client, add=plan.add)
        fault_point("after-publish")
        return st

    def retire(self, lineage: LineageSettings, st: LineageState) -> LineageState:
        """Remove our records that match nothing deployed or staged (state written after the UPDATE)."""
        plan = rollover.retire_plan(st, lineage.tlsa)
        if not plan.remove:
            return st
        self._describe(lineage.name, "retire", plan)
        if self.dry_run:
            return st
        zone.apply(self.client, remove=plan.remove)
        fault_point("after-retire")
        return self.save(rollover.record_retired(st, plan.remove))

    def _describe(self, lineage: str, verb: str, plan: Plan) -> None:
        for record in (*plan.add, *plan.remove):
            self.say(lineage, f"{verb} {record.name} TLSA {record.value[:14]}..")

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

    def reload_and_verify(self, lineage: LineageSettings, st: LineageState) -> LineageState:
        """Reload the services, check each verify endpoint, then mark the deploy verified."""
        if self.dry_run:
            self.say(lineage.name, f"reload with {list(lineage.reload)} and verify {[str(v) for v in lineage.verify]}")
            return rollover.verified(st)  # show the rest of the plan as if they succeeded
        try:
            services.reload(lineage.name, lineage.reload)
            fault_point("after-reload")
            self._verify(lineage, st)
        except DaneError as err:
            self.save(replace(st, error=str(err)))
            raise
        if lineage.reload or lineage.verify:
            self.say(lineage.name, "services reloaded" + (" and verified" if lineage.verify else ""))
        live = st.deployed.fingerprint if st.deployed else None
        self.store.prune_versions(lineage.name, {live} if live else set())
        return self.save(rollover.verified(st))

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


def stage(rollout: Rollout, lineage: LineageSettings, certs: certificate.CertSet) -> LineageState:
    """Steps 1-2 on renewal: stage `certs` and pre-publish its records (bootstrap deploys at once).

    The caller holds the state directory's lock.
    """
    now = rollout.now()
    found = certificate.problems(certs, datetime.datetime.fromtimestamp(now, datetime.UTC))
    if found:
        raise_cert_error(lineage.name, found)
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
    staged = rollover.stage(st, new, on_primary, now)
    if staged == st:
        rollout.say(lineage.name, f"certificate {new.fingerprint[:16]} is already deployed or staged")
    else:
        if not rollout.dry_run:
            rollout.store.stage(lineage.name, certs)
            fault_point("after-stage-files")
            rollout.store.prune_staging(lineage.name, new.fingerprint)
        assert staged.staged is not None
        rollout.say(lineage.name, f"staged certificate {new.fingerprint[:16]} in "
                                  f"{rollout.store.staged_dir(lineage.name, new.fingerprint)}")
        st = rollout.save(staged)
        if staged.staged.no_wait:
            rollout.say(lineage.name, f"no wait needed: {staged.staged.no_wait}")
            st = rollout.go_live(lineage, st)
    if dns_error is not None:
        raise dns_error
    return finish(rollout, lineage, st)


def finish(rollout: Rollout, lineage: LineageSettings, st: LineageState) -> LineageState:
    """Publish what is missing, reload/verify a swap not yet verified, retire what is stale."""
    st = rollout.publish(lineage, st)
    if st.unverified:
        st = rollout.reload_and_verify(lineage, st)
    return rollout.retire(lineage, st)


def current(rollout: Rollout, lineage: LineageSettings) -> LineageState:
    """The lineage's state, reconciled with the certificate actually deployed (after a crash)."""
    st = state.load_lineage(rollout.config.state_dir, lineage.name)
    on_disk = rollout.store.deployed_fingerprint(lineage.name)
    fixed = rollover.reconcile(st, on_disk)
    if fixed != st:
        rollout.say(lineage.name, "the last run stopped after the swap; recording the deployed certificate")
        st = rollout.save(fixed)
    return st


def raise_cert_error(lineage: str, problems: list[str]) -> None:
    """Refuse a certificate version with every reason."""
    raise CertError(f"{lineage}: refusing the new certificate: {'; '.join(problems)}")


def deploy_all(rollout: Rollout, names: list[str] | None = None, force: bool = False) -> list[str]:
    """Run deploy_lineage for the named (default: every configured) lineage under the lock.

    Each lineage is handled on its own; returns one error line per lineage that failed.
    """
    failures = []
    with state.locked(rollout.config.state_dir, wait=False):
        for name in names or sorted(rollout.config.lineages):
            try:
                deploy_lineage(rollout, rollout.config.lineages[name], force)
            except DaneError as err:
                failures.append(f"{name}: {err}")
    return failures


def _newer_than_known(rollout: Rollout, lineage: str, found: certificate.CertSet, st: LineageState) -> bool:
    """Whether certbot's current certificate is newer than the deployed and the staged one."""
    candidate = certificate.info(found.cert)
    known = [v.fingerprint for v in (st.deployed, st.staged) if v is not None]
    if candidate.fingerprint in known:
        return False
    copies = [rollout.store.read_staged(lineage, st.staged.fingerprint)] if st.staged else []
    deployed = certstore.read_dir(rollout.store.live_dir(lineage))
    copies += [deployed] if deployed else []
    return all(certificate.info(c.cert).not_before < candidate.not_before for c in copies)


def deploy_lineage(rollout: Rollout, lineage: LineageSettings, force: bool = False) -> LineageState:
    """Steps 3-6 for one lineage: converge DNS, and deploy the staged version once its gate opens.

    A certificate in certbot's live/ newer than anything deployed or staged is staged first: a
    lineage never seen (`certbot certonly -i dane` calls no installer) or a renewal whose hook
    did not run or was killed. The caller holds the lock.
    """
    st = current(rollout, lineage)
    live = rollout.config.letsencrypt_dir / "live" / lineage.name
    found = certstore.read_dir(live)
    if found is not None and _newer_than_known(rollout, lineage.name, found, st):
        rollout.say(lineage.name, f"{live} holds a newer certificate than certbot-dane knows; staging it")
        st = stage(rollout, lineage, found)
    elif st.deployed is None and st.staged is None:
        rollout.say(lineage.name, f"nothing deployed or staged, and no certificate in {live} yet")
        return st
    st = rollout.publish(lineage, st)
    if st.staged is not None:
        observed = zone.observe(rollout.client, lineage.tlsa)
        result = rollover.gate(st, observed, rollout.now())
        for lag in result.lagging:
            rollout.say(lineage.name, f"lagging: {lag}")
        st = rollout.save(rollover.with_gate(st, result))
        if result.ready or force:
            if not result.ready:
                rollout.say(lineage.name, f"EMERGENCY deploy before the gate ({result.reason}): DANE-validating "
                                          "senders that cached the old TLSA RRset will defer mail until it expires")
            st = rollout.go_live(lineage, st)
        else:
            when = (f" until {datetime.datetime.fromtimestamp(result.safe_at, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"
                    if result.safe_at else "")
            rollout.say(lineage.name, f"not deploying yet: {result.reason}{when}")
    if st.unverified:
        st = rollout.reload_and_verify(lineage, st)
    return rollout.retire(lineage, st)
