"""Change plans: what each phase of a run will do, decided from values and checked before it is done.

Pure, like `rollover`. One planner per phase, each returning a plan value with a `check`:
- publish and retire (`publish`, `retire` -> `Plan`): records to add and remove, RFC 2136
  prerequisites, the lineage states after it succeeds, the lines to report. `Plan.check` refuses a
  plan that would remove a record that must stay (I2, I3).
- gate: `rollover.gate` decides; `swap` turns an open gate into a `Swap` (the staged copy that goes
  live, the state after the rename). `Swap.check` refuses a swap the gate did not allow (I1).
- reload and verify (`reload` -> `Reload`): each distinct reload command once, the versions kept
  when older ones are pruned (the deployed one and whatever live/ points at), and the states once
  it all succeeded. `Reload.check` refuses to prune a version that is live or just deployed.
`certbot_dane.deploy` applies the plans; `--dry-run` applies them to in-memory state only, and
prints the same lines.

Ownership claims coordinate several hosts (and several lineages of one host) that publish the
same record at the same owner name, sharing nothing but the DNS. Next to each record it publishes,
a lineage publishes a TXT claim at `<hash of the record>._certbot-dane.<owner>` holding
"<instance id> <lineage>". A record leaves the RRset only together with the last claim on it, under
an RFC 2136 prerequisite that the claim RRset is exactly what the remover saw: when another host
claims the record meanwhile, the server refuses the whole UPDATE (NXRRSET) and nothing is removed.
A record that exists with no claim when a lineage first wants it was put there by hand: it is
foreign, gets no claim, and is never removed (I3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from certbot_dane.config import LineageSettings
from certbot_dane.records import Answer, Record, Require
from certbot_dane.rollover import Gate, LineageState, Published, UnsafePlan, swapped, verified, wanted_values

CLAIM_LABEL = "_certbot-dane"

#: (owner name, TLSA record value): one record of one RRset.
Pair = tuple[str, str]


def claim_name(owner: str, value: str) -> str:
    """Where the claims on one record live: `<128-bit hash of the record>._certbot-dane.<owner>`."""
    return f"{hashlib.sha256(value.encode()).hexdigest()[:32]}.{CLAIM_LABEL}.{owner}"


def owner_of_claim(name: str) -> str | None:
    """The TLSA owner a claim name belongs to, None for any other name."""
    labels = name.split(".", 2)
    return labels[2] if len(labels) == 3 and labels[1] == CLAIM_LABEL else None


def claim_value(instance: str, lineage: str) -> str:
    """A claim's TXT data in presentation form, as the DNS adapter reads it back."""
    return f'"{instance} {lineage}"'


def claim(owner: str, value: str, instance: str, lineage: str, ttl: int = 0) -> Record:
    """The TXT record by which `lineage` of `instance` claims record `value` at `owner`."""
    return Record(claim_name(owner, value), "TXT", claim_value(instance, lineage), ttl)


@dataclass(frozen=True)
class Intent:
    """One lineage's part in a run: its settings' owner names (after CNAMEs), TTL, and state."""

    lineage: str
    owners: tuple[str, ...]
    state: LineageState
    ttl: Mapping[str, int] = field(default_factory=dict)  # TTL for a new RRset, per owner


@dataclass(frozen=True)
class Plan:
    """DNS changes for a batch of lineages, and each lineage's state once they are applied."""

    add: tuple[Record, ...] = ()
    remove: tuple[Record, ...] = ()
    require: tuple[Require, ...] = ()
    ahead: Mapping[str, LineageState] = field(default_factory=dict)   # written before the UPDATE is sent
    states: Mapping[str, LineageState] = field(default_factory=dict)  # written once it succeeded
    lines: tuple[tuple[str, str], ...] = ()  # (lineage, what it will do)

    @property
    def changes(self) -> bool:
        """Whether applying the plan sends anything."""
        return bool(self.add or self.remove)

    def check(self, protected: Mapping[str, frozenset[str]], ours: Iterable[Pair], instance: str) -> None:
        """Raise UnsafePlan if a removal breaks I2 (a protected value: live somewhere) or I3 (not ours).

        `protected`: per owner, the values no removal may touch (every deployed certificate's records
        on this host, whatever the state files say); `ours`: the pairs some lineage published.
        """
        mine = set(ours)
        for record in self.remove:
            if record.rdtype == "TXT":
                if owner_of_claim(record.name) is None or not record.value.startswith(f'"{instance} '):
                    raise UnsafePlan(f"refusing to remove {record}: not a claim of this host")
                continue
            if record.value in protected.get(record.name, frozenset()):
                raise UnsafePlan(f"refusing to remove {record}: it matches a deployed certificate")
            if (record.name, record.value) not in mine:
                raise UnsafePlan(f"refusing to remove {record}: certbot-dane did not publish it")


def to_claim(intents: Iterable[Intent], primary: Mapping[str, Answer]) -> set[Pair]:
    """The pairs whose claims the publish planner needs: wanted, served, and not (yet surely) claimed by us."""
    return {(owner, value) for intent in intents for owner in intent.owners for value in wanted_values(intent.state)
            if value in primary[owner].values and not _claimed(intent.state, owner, value)}


def publish(intents: Iterable[Intent], primary: Mapping[str, Answer], claims: Mapping[Pair, frozenset[str]],
            instance: str, now: float) -> Plan:
    """Add each wanted record the primary lacks, with our claim; claim what another certbot-dane published.

    A record and our claim on it always go together in one UPDATE (adding a record that exists is a
    no-op), so that a record never lands unclaimed and a claim never lands on nothing. The states name
    every such record as ours before the UPDATE is sent (`ahead`, claim unconfirmed) and as claimed
    once it succeeded (`states`). A record already served with no claim on it is foreign (added by
    hand): left alone, never ours.
    """
    adds: list[Record] = []
    ahead: dict[str, LineageState] = {}
    after: dict[str, LineageState] = {}
    lines: list[tuple[str, str]] = []
    for intent in intents:
        st = intent.state
        mine: list[Pair] = []
        absent = False  # a staged record was missing: senders may hold an RRset without it
        for owner in intent.owners:
            answer = primary[owner]
            ttl = answer.ttl or intent.ttl.get(owner, 0)
            for value in wanted_values(st):
                if value not in answer.values:
                    lines.append((intent.lineage, f"publish {owner} TLSA {value[:14]}.."))
                    absent = absent or (st.staged is not None and value in st.staged.records)
                elif _claimed(st, owner, value):
                    continue
                elif (owner, value) in _published(st) or claims.get((owner, value)):
                    others = claims.get((owner, value), frozenset()) - {claim_value(instance, intent.lineage)}
                    lines.append((intent.lineage, f"claim {owner} TLSA {value[:14]}.."
                                  + (f" (also claimed by {_who(others)})" if others else "")))
                else:
                    continue  # there already, unclaimed: someone's own record; not ours to claim or remove
                adds += [Record(owner, "TLSA", value, ttl), claim(owner, value, instance, intent.lineage, ttl)]
                mine.append((owner, value))
        if mine:
            if absent and st.staged is not None and st.staged.served_at is not None:
                st = replace(st, staged=replace(st.staged, served_at=None))  # the gate's wait starts again
            ahead[intent.lineage] = _with_published(st, mine, now, claimed=False)
            after[intent.lineage] = _with_published(st, mine, now, claimed=True)
    return Plan(add=tuple(adds), ahead=ahead, states=after, lines=tuple(lines))


def kept(lineages: Iterable[tuple[Iterable[str], LineageState, Iterable[str]]]) -> tuple[
        dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """Per owner, what must stay: (keep, protected) for `retire` and `Plan.check`.

    `lineages`: each configured lineage's owner names, state, and the records its deployed
    certificate needs (from the files on disk). Protected: those records, at its names and at every
    name it published at (names dropped from the config too: I2). Keep: those plus what its state
    still wants there (deployed, previous, staged).
    """
    keep: dict[str, set[str]] = {}
    protected: dict[str, set[str]] = {}
    for owners, st, live in lineages:
        live = set(live)
        for owner in {*owners, *(p.name for p in st.published)}:
            protected.setdefault(owner, set()).update(live)
            keep.setdefault(owner, set()).update(live, wanted_values(st))
    return {o: frozenset(v) for o, v in keep.items()}, {o: frozenset(v) for o, v in protected.items()}


def to_retire(intents: Iterable[Intent], keep: Mapping[str, frozenset[str]]) -> set[Pair]:
    """The pairs the retire planner considers: ours, wanted by no lineage of this host."""
    return {(p.name, p.value) for intent in intents for p in intent.state.published
            if p.value not in wanted_values(intent.state) and p.value not in keep.get(p.name, frozenset())}


def retire(intents: Iterable[Intent], keep: Mapping[str, frozenset[str]], claims: Mapping[Pair, frozenset[str]],
           instance: str) -> Plan:
    """Remove our records that no lineage of this host wants, together with the last claim on them.

    `keep`: per owner, the values some configured lineage of this host wants (or that match a
    certificate deployed here); those stay, and stay ours. A record is removed only while we hold a
    claim on it and nobody else does, under the prerequisite that the claims are exactly those; a
    record published before claims existed (`claimed` None) only while nobody claims it. Otherwise
    only our claims go and the record stops being ours: another host may need it, or our claim never
    landed (then it was never ours to remove).
    """
    intents = list(intents)
    wanted_by: dict[Pair, list[Intent]] = {}
    for intent in intents:
        for pair in to_retire([intent], keep):
            wanted_by.setdefault(pair, []).append(intent)
    removes: list[Record] = []
    require: list[Require] = []
    lines: list[tuple[str, str]] = []
    gone: dict[str, set[Pair]] = {}
    for (owner, value), retiring in sorted(wanted_by.items()):
        found = claims.get((owner, value), frozenset())
        held = found & {claim_value(instance, i.lineage) for i in retiring}
        others = found - held
        legacy = not found and all(_published(i.state)[(owner, value)].claimed is None for i in retiring)
        removes += [Record(claim_name(owner, value), "TXT", held_claim) for held_claim in sorted(held)]
        if (held and not others) or legacy:
            removes.append(Record(owner, "TLSA", value))
            require.append(Require(claim_name(owner, value), "TXT", found or None))
            text = f"retire {owner} TLSA {value[:14]}.."
        elif others:
            text = f"release {owner} TLSA {value[:14]}.. (still claimed by {_who(others)})"
        else:
            text = f"release {owner} TLSA {value[:14]}.. (our claim on it never landed: not ours to remove)"
        for intent in retiring:
            lines.append((intent.lineage, text))
            gone.setdefault(intent.lineage, set()).add((owner, value))
    states = {i.lineage: replace(i.state, published=tuple(p for p in i.state.published
                                                          if (p.name, p.value) not in gone[i.lineage]))
              for i in intents if i.lineage in gone}
    return Plan(remove=tuple(removes), require=tuple(require), states=states, lines=tuple(lines))


@dataclass(frozen=True)
class Swap:
    """One lineage's swap: its staged copy replaces the live files (one rename), then `state` is written."""

    lineage: str
    fingerprint: str     # the staged copy that goes live
    state: LineageState  # after the rename: deployed, not yet reloaded and verified
    forced: str | None   # the gate's reason for waiting, when an emergency deploy overrides it

    @property
    def lines(self) -> tuple[str, ...]:
        """What the swap does, for the run's report (the target directory is the applier's to add)."""
        warning = () if self.forced is None else (
            f"EMERGENCY deploy before the gate ({self.forced}): DANE-validating senders that cached the old "
            "TLSA RRset will defer mail until it expires",)
        return (*warning, f"deploy certificate {self.fingerprint[:16]}")

    def check(self, before: LineageState, gate: Gate) -> None:
        """Raise UnsafePlan unless this swap puts live the version the gate judged, and the gate is open
        or the admin forced it (I1)."""
        if before.staged is None or before.staged.fingerprint != self.fingerprint:
            raise UnsafePlan(f"{self.lineage}: refusing to deploy {self.fingerprint[:16]}: not the staged version")
        if not gate.ready and self.forced is None:
            raise UnsafePlan(f"{self.lineage}: refusing to deploy before the gate opens: {gate.reason}")
        if self.state.deployed is None or self.state.deployed.fingerprint != self.fingerprint:
            raise UnsafePlan(f"{self.lineage}: the state after the swap does not name {self.fingerprint[:16]}")


def swap(state: LineageState, gate: Gate, force: bool = False) -> Swap | None:
    """The swap an open gate (or `force`: an emergency deploy) allows; None while nothing may go live."""
    if state.staged is None or not (gate.ready or force):
        return None
    return Swap(state.lineage, state.staged.fingerprint, swapped(state), None if gate.ready else gate.reason)


@dataclass(frozen=True)
class Reload:
    """Reload and verify for the swapped lineages of a batch."""

    commands: tuple[tuple[str, tuple[str, ...]], ...] = ()  # each distinct command once, with the lineages it serves
    keep: Mapping[str, frozenset[str]] = field(default_factory=dict)  # the version directories kept when pruning
    states: Mapping[str, LineageState] = field(default_factory=dict)  # once its commands and checks succeeded
    lines: tuple[tuple[str, str], ...] = ()

    def needs(self, lineage: str) -> list[str]:
        """The commands a lineage's services are reloaded with."""
        return [command for command, lineages in self.commands if lineage in lineages]

    def check(self, before: Mapping[str, LineageState], on_disk: Mapping[str, str | None]) -> None:
        """Raise UnsafePlan if pruning would delete the version a lineage's services read (`on_disk`: what
        live/ points at now, whatever the state says: an admin may have put an older one back by hand) or
        the one just deployed, or if the plan settles a lineage that was not swapped."""
        for name in self.states:
            st = before[name]
            if not st.unverified or st.deployed is None:
                raise UnsafePlan(f"{name}: refusing to reload and verify: nothing was swapped in")
            kept_versions = self.keep.get(name, frozenset())
            for needed in (st.deployed.fingerprint, on_disk.get(name)):
                if needed is not None and needed not in kept_versions:
                    raise UnsafePlan(f"{name}: refusing to prune version {needed[:16]}: it is live or just "
                                     "deployed")


def reload(swapped_: Iterable[tuple[LineageSettings, LineageState]], on_disk: Mapping[str, str | None]) -> Reload:
    """Reload each distinct command once for all the lineages just swapped in (unverified), then verify each;
    prune every version but the deployed one and the one live/ points at (`on_disk`)."""
    lineages = [(lineage, st) for lineage, st in swapped_ if st.unverified and st.deployed is not None]
    users: dict[str, list[str]] = {}
    for lineage, _ in lineages:
        for command in lineage.reload:
            users.setdefault(command, []).append(lineage.name)
    lines = [(lineage.name, f"reload with {list(lineage.reload)} and verify {[str(v) for v in lineage.verify]}")
             for lineage, _ in lineages]
    keep = {lineage.name: frozenset(fp for fp in (st.deployed.fingerprint if st.deployed else None,
                                                  on_disk.get(lineage.name)) if fp is not None)
            for lineage, st in lineages}
    return Reload(tuple((c, tuple(n)) for c, n in users.items()), keep,
                  {lineage.name: verified(st) for lineage, st in lineages}, tuple(lines))


def _published(st: LineageState) -> dict[Pair, Published]:
    return {(p.name, p.value): p for p in st.published}


def _claimed(st: LineageState, owner: str, value: str) -> bool:
    found = _published(st).get((owner, value))
    return found is not None and found.claimed is True


def _with_published(st: LineageState, pairs: Iterable[Pair], now: float, claimed: bool) -> LineageState:
    """`st` naming these pairs as ours, with this claim status (a pair already ours keeps its date)."""
    known = _published(st)
    new = {pair: replace(known[pair], claimed=claimed) if pair in known else Published(*pair, now, claimed)
           for pair in pairs}
    return replace(st, published=tuple(new.get((p.name, p.value), p) for p in st.published)
                   + tuple(p for pair, p in new.items() if pair not in known))


def _who(claims: frozenset[str]) -> str:
    return ", ".join(sorted(c.strip('"') for c in claims))
