"""The manual auth and cleanup hooks against the real named: what they add is written down before it is sent."""

from __future__ import annotations

import json

import pytest

from certbot_dane import hooks
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import DnsError, ServerUnreachable, UpdateRejected
from certbot_dane.records import ZoneUpdate


def env_for(config, domain: str, validation: str, remaining: int, all_domains: str) -> dict[str, str]:
    return {"CERTBOT_DANE_CONFIG": str(config), "CERTBOT_DOMAIN": domain, "CERTBOT_VALIDATION": validation,
            "CERTBOT_REMAINING_CHALLENGES": str(remaining), "CERTBOT_ALL_DOMAINS": all_domains}


def saved(tmp_path) -> dict[str, list[dict[str, object]]]:
    return json.loads((tmp_path / "state" / hooks.STATE_FILE).read_text())


def test_a_record_whose_update_was_applied_but_not_answered_is_removed_by_cleanup(sandbox, tmp_path, monkeypatch):
    config = sandbox.write_config(tmp_path / "dane.toml", state_dir=tmp_path / "state")
    env = env_for(config, "lost.example.org", "lost-answer", 0, "lost.example.org")
    real_update = DnsClient.update

    def applied_then_timed_out(client: DnsClient, change: ZoneUpdate) -> None:
        real_update(client, change)
        raise ServerUnreachable(f"{client.settings.server}: no answer within 10s (UPDATE of zone {change.zone})")

    monkeypatch.setattr(DnsClient, "update", applied_then_timed_out)
    with pytest.raises(DnsError, match="no answer within 10s"):
        hooks.auth(env)
    monkeypatch.undo()
    assert sandbox.primary.query("_acme-challenge.lost.example.org", "TXT") == ['"lost-answer"']

    hooks.cleanup(env)

    assert sandbox.primary.query("_acme-challenge.lost.example.org", "TXT") == []
    assert saved(tmp_path) == {"added": [], "pending": []}


def test_a_refused_second_zone_leaves_no_record_of_ours_in_the_first_after_cleanup(sandbox, tmp_path):
    config = sandbox.write_config(tmp_path / "dane.toml", state_dir=tmp_path / "state")
    domains = "twozones.example.org,no.locked.example"
    first = env_for(config, "twozones.example.org", "first-zone", 1, domains)
    second = env_for(config, "no.locked.example", "second-zone", 0, domains)
    hooks.auth(first)
    with pytest.raises(UpdateRejected, match="answered REFUSED to UPDATE of zone locked.example."):
        hooks.auth(second)
    assert [r["name"] for r in saved(tmp_path)["added"]] == ["_acme-challenge.twozones.example.org."]

    hooks.cleanup(first)
    hooks.cleanup(second)  # nothing of ours there: left alone, no error

    assert sandbox.primary.query("_acme-challenge.twozones.example.org", "TXT") == []
    assert saved(tmp_path) == {"added": [], "pending": []}
