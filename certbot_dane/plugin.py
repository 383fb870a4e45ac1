"""The `dane` certbot plugin: a thin shell over certbot-dane's core.

Authenticator role: DNS-01 through RFC 2136, waiting for every authoritative server.
Installer role (`-i dane`): on first install and on every renewal, stage the certificate and
pre-publish its TLSA records; `certbot-dane deploy` (the timer) swaps it in when safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from acme import challenges
from certbot import errors, interfaces
from certbot.achallenges import AnnotatedChallenge
from certbot.plugins import common

from certbot_dane import certstore, challenge, compat, config, deploy, state, zone
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import DaneError
from certbot_dane.records import Record

logger = logging.getLogger(__name__)


class Plugin(common.Plugin, interfaces.Authenticator, interfaces.Installer, interfaces.RenewDeployer):
    """DNS-01 through RFC 2136 and staged DANE TLSA rollover (certbot-dane)."""

    description = ("DNS-01 through RFC 2136 dynamic updates, waiting for every authoritative server "
                   "instead of sleeping; as installer, staged DANE TLSA rollover (certbot-dane)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settings: config.Config | None = None
        self._published: list[Record] = []
        self._staged: set[str] = set()

    @classmethod
    def add_parser_arguments(cls, add: Callable[..., None]) -> None:
        add("config", default=None, metavar="FILE",
            help=f"certbot-dane configuration file (default: ${config.ENV_VAR} or {config.DEFAULT_PATH}); "
                 "saved in the renewal configuration")

    def more_info(self) -> str:
        return ("Adds DNS-01 TXT records with TSIG-signed RFC 2136 updates (one per zone) and polls every "
                "authoritative server until each serves them. As installer, stages renewed certificates and "
                "pre-publishes their TLSA records; `certbot-dane deploy` swaps them in after two TTLs.")

    def prepare(self) -> None:
        try:
            self._settings = config.load(self.conf("config"))
        except DaneError as err:
            raise errors.PluginError(str(err)) from err

    def _config(self) -> config.Config:
        if self._settings is None:
            raise errors.Error("the dane plugin has not been prepared")
        return self._settings

    # -- authenticator -------------------------------------------------------------------
    def get_chall_pref(self, identifier: str) -> Iterable[type[challenges.Challenge]]:
        return [challenges.DNS01]

    def perform(self, achalls: list[AnnotatedChallenge]) -> list[challenges.ChallengeResponse]:
        client = DnsClient(self._config().dns)
        records = [challenge.validation_record(a.validation_domain_name(compat.challenge_domain(a)),
                                               a.validation(a.account_key)) for a in achalls]
        # written down before the UPDATEs: when one zone's fails after another's succeeded (or the
        # answer is lost), cleanup still removes every record that may have been added
        self._published = list(dict.fromkeys(self._published + records))
        try:
            zone.apply(client, add=records)
            challenge.wait(client, records)
        except DaneError as err:
            raise errors.PluginError(str(err)) from err
        return [a.response(a.account_key) for a in achalls]

    def cleanup(self, achalls: list[AnnotatedChallenge]) -> None:
        if not self._published:
            return
        for err in challenge.remove(DnsClient(self._config().dns), self._published):
            logger.warning("could not remove DNS-01 TXT records: %s", err)
        self._published = []

    # -- installer -----------------------------------------------------------------------
    def deploy_cert(self, domain: str, cert_path: str, key_path: str, chain_path: str,
                    fullchain_path: str) -> None:
        lineage = Path(cert_path).parent.name
        paths = (Path(cert_path), Path(chain_path), Path(fullchain_path), Path(key_path))
        self._stage(lineage, paths)

    def renew_deploy(self, lineage: Any, *args: Any, **kwargs: Any) -> None:
        paths = (Path(lineage.cert_path), Path(lineage.chain_path), Path(lineage.fullchain_path),
                 Path(lineage.key_path))
        self._stage(lineage.lineagename, paths)

    def _stage(self, lineage: str, paths: tuple[Path, Path, Path, Path]) -> None:
        if lineage in self._staged:  # deploy_cert comes once per domain of the lineage
            return
        settings = self._config()
        if lineage not in settings.lineages:
            logger.info("certbot-dane: lineage %s is not in %s; nothing to do", lineage, settings.path)
            return
        try:
            rollout = deploy.Rollout.from_config(settings)
            with state.locked(settings.state_dir, group=settings.monitor_group):
                deploy.stage(rollout, settings.lineages[lineage], certstore.read_lineage(*paths))
        except DaneError as err:
            raise errors.PluginError(str(err)) from err
        self._staged.add(lineage)

    def get_all_names(self) -> Iterable[str]:
        return sorted({h for lineage in self._config().lineages.values() for h in lineage.hosts})

    def enhance(self, domain: str, enhancement: str, options: Any = None) -> None:
        raise errors.PluginError(f"the dane installer supports no enhancement ({enhancement})")

    def supported_enhancements(self) -> list[str]:
        return []

    def save(self, title: str | None = None, temporary: bool = False) -> None:
        """Nothing to save: staging writes its files and state as it goes."""

    def rollback_checkpoints(self, rollback: int = 1) -> None:
        """No checkpoints: the deployed copy only changes through `certbot-dane deploy`."""

    def recovery_routine(self) -> None:
        """Nothing to recover: every step is written atomically."""

    def config_test(self) -> None:
        """The configuration was validated in prepare()."""

    def restart(self) -> None:
        """Services are reloaded by `certbot-dane deploy` when the new certificate goes live."""
