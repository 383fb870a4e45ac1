"""Certificate files on disk: what goes live or into staging is exactly the staged files with the intended modes."""

from __future__ import annotations

import datetime
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certbot_dane.certificate import CertSet, fingerprint
from certbot_dane.certstore import VERSIONS, CertStore, read_dir
from certbot_dane.errors import StateError

LINEAGE = "mx.example.org"
NOBODY = 65534


def make_certs(name: str = LINEAGE) -> CertSet:
    """A leaf signed by a throw-away CA, as certbot writes them (PEM)."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey) -> bytes:
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=90))
                .sign(signer, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    chain = issue("test CA", ca_key, "test CA", ca_key)
    cert = issue(name, key, "test CA", ca_key)
    privkey = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return CertSet(cert, chain, cert + chain, privkey)


def expected(certs: CertSet, gid: int | None = None) -> dict[str, tuple[bytes, int]]:
    key_mode = 0o600 if gid is None else 0o640
    return {"cert.pem": (certs.cert, 0o644), "chain.pem": (certs.chain, 0o644),
            "fullchain.pem": (certs.fullchain, 0o644), "privkey.pem": (certs.privkey, key_mode),
            "combined.pem": (certs.privkey + certs.fullchain, key_mode)}


def assert_exactly(directory: Path, certs: CertSet, gid: int | None = None) -> None:
    """`directory` holds exactly the version's files, ours, plain, with the intended modes and bytes."""
    real = directory.resolve()
    info = os.lstat(real)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.geteuid(), 0o755)
    assert sorted(os.listdir(real)) == sorted(expected(certs))
    for name, (data, mode) in expected(certs, gid).items():
        info = os.lstat(real / name)
        assert stat.S_ISREG(info.st_mode) and info.st_nlink == 1, name
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (os.geteuid(), mode), name
        if gid is not None and mode == 0o640:
            assert info.st_gid == gid
        assert (real / name).read_bytes() == data, name


def plant(directory: Path, certs: CertSet, other: CertSet, outside: Path) -> None:
    """A version directory as certbot-dane would lay it out, with the planted key of `other`."""
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    for name, (data, mode) in expected(certs).items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(mode)
    (directory / "privkey.pem").write_bytes(other.privkey)


def foreign_key_world_readable(directory: Path, certs: CertSet, other: CertSet, outside: Path) -> None:
    plant(directory, certs, other, outside)
    (directory / "privkey.pem").chmod(0o644)


def same_files_but_key_world_readable(directory: Path, certs: CertSet, other: CertSet, outside: Path) -> None:
    plant(directory, certs, certs, outside)
    (directory / "privkey.pem").chmod(0o644)
    (directory / "combined.pem").chmod(0o644)


def other_owner(directory: Path, certs: CertSet, other: CertSet, outside: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("planting files of another owner needs root")
    plant(directory, certs, certs, outside)
    for path in (directory, *directory.iterdir()):
        os.chown(path, NOBODY, NOBODY)


def symlink_to_elsewhere(directory: Path, certs: CertSet, other: CertSet, outside: Path) -> None:
    plant(outside / "theirs", certs, certs, outside)
    directory.parent.mkdir(parents=True)
    directory.symlink_to(outside / "theirs")


def key_symlinked_elsewhere(directory: Path, certs: CertSet, other: CertSet, outside: Path) -> None:
    plant(directory, certs, certs, outside)
    (outside / "key.pem").write_bytes(certs.privkey)
    (directory / "privkey.pem").unlink()
    (directory / "privkey.pem").symlink_to(outside / "key.pem")


def key_hard_linked_elsewhere(directory: Path, certs: CertSet, other: CertSet, outside: Path) -> None:
    plant(directory, certs, certs, outside)
    os.link(directory / "privkey.pem", outside / "key.pem")


def an_extra_file(directory: Path, certs: CertSet, other: CertSet, outside: Path) -> None:
    plant(directory, certs, certs, outside)
    (directory / "dhparams.pem").write_bytes(b"theirs")


def group_writable(directory: Path, certs: CertSet, other: CertSet, outside: Path) -> None:
    plant(directory, certs, certs, outside)
    directory.chmod(0o775)


def a_plain_file(directory: Path, certs: CertSet, other: CertSet, outside: Path) -> None:
    directory.parent.mkdir(parents=True)
    directory.write_bytes(b"not a directory")


PLANTED: list[Callable[[Path, CertSet, CertSet, Path], None]] = [
    foreign_key_world_readable, same_files_but_key_world_readable, other_owner, symlink_to_elsewhere,
    key_symlinked_elsewhere, key_hard_linked_elsewhere, an_extra_file, group_writable, a_plain_file]


@pytest.fixture(scope="module")
def pair() -> tuple[CertSet, CertSet]:
    return make_certs(), make_certs("intruder.example")


@pytest.mark.parametrize("planted", PLANTED, ids=lambda f: f.__name__)
def test_a_planted_version_directory_never_goes_live(tmp_path, pair, planted):
    certs, other = pair
    store = CertStore(tmp_path / "state", tmp_path / "live")
    outside = tmp_path / "outside"
    outside.mkdir()
    version = tmp_path / "live" / VERSIONS / LINEAGE / fingerprint(certs.cert)[:16]
    planted(version, certs, other, outside)
    theirs = sorted(p.name for p in outside.rglob("*"))

    store.swap(LINEAGE, certs, None)

    assert_exactly(store.live_dir(LINEAGE), certs)
    assert store.live_dir(LINEAGE).resolve() == version
    assert os.listdir(version.parent) == [version.name], "nothing planted or temporary is left next to it"
    assert sorted(p.name for p in outside.rglob("*")) == theirs, "files outside are not followed or removed"


@pytest.mark.parametrize("planted", PLANTED, ids=lambda f: f.__name__)
def test_a_planted_staging_directory_is_replaced_by_the_staged_files(tmp_path, pair, planted):
    certs, other = pair
    store = CertStore(tmp_path / "state", tmp_path / "live")
    outside = tmp_path / "outside"
    outside.mkdir()
    staged = store.staged_dir(LINEAGE, fingerprint(certs.cert))
    (tmp_path / "state" / "staging").mkdir(parents=True, mode=0o700)
    planted(staged, certs, other, outside)

    assert store.stage(LINEAGE, certs) == staged

    assert not staged.is_symlink()
    assert_exactly(staged, certs)
    assert store.read_staged(LINEAGE, fingerprint(certs.cert)) == certs


def test_an_existing_exact_version_is_kept_as_it_is(tmp_path, pair):
    certs, _ = pair
    store = CertStore(tmp_path / "state", tmp_path / "live")
    store.swap(LINEAGE, certs, None)
    before = os.stat(store.live_dir(LINEAGE) / "privkey.pem").st_ino
    store.swap(LINEAGE, certs, None)
    assert os.stat(store.live_dir(LINEAGE) / "privkey.pem").st_ino == before, "readers of it are not disturbed"


def test_a_key_group_set_later_rewrites_the_keys_0640(tmp_path, pair):
    certs, _ = pair
    store = CertStore(tmp_path / "state", tmp_path / "live")
    store.swap(LINEAGE, certs, None)
    store.swap(LINEAGE, certs, os.getegid())
    assert_exactly(store.live_dir(LINEAGE), certs, os.getegid())


def test_a_versions_directory_others_may_write_is_refused_and_nothing_goes_live(tmp_path, pair):
    certs, _ = pair
    store = CertStore(tmp_path / "state", tmp_path / "live")
    versions = tmp_path / "live" / VERSIONS / LINEAGE
    versions.mkdir(parents=True)
    versions.chmod(0o777)
    with pytest.raises(StateError, match=rf"^{versions} is not a directory owned by uid {os.geteuid()} and "
                                         r"writable only by it \(owner \d+, mode 0777\)"):
        store.swap(LINEAGE, certs, None)
    assert not os.path.lexists(store.live_dir(LINEAGE))
    assert os.listdir(versions) == []


def test_what_a_killed_swap_left_behind_is_cleaned_up(tmp_path, pair):
    certs, _ = pair
    store = CertStore(tmp_path / "state", tmp_path / "live")
    versions = tmp_path / "live" / VERSIONS / LINEAGE
    versions.mkdir(parents=True)
    (versions / ".0123456789abcdef.tmp-x1y2").mkdir()  # killed while writing a version
    (versions / ".0123456789abcdef.tmp-x1y2" / "privkey.pem").write_bytes(b"partial")
    (tmp_path / "live" / f".{LINEAGE}.link-4242").symlink_to(versions / "gone")  # killed before the rename
    (tmp_path / "live" / f".{LINEAGE}.linked").write_bytes(b"not ours")

    store.swap(LINEAGE, certs, None)
    store.prune_versions(LINEAGE, {fingerprint(certs.cert)})

    assert sorted(os.listdir(tmp_path / "live")) == sorted([VERSIONS, LINEAGE, f".{LINEAGE}.linked"])
    assert os.listdir(versions) == [fingerprint(certs.cert)[:16]]


def test_a_reader_without_the_key_gets_the_certificates_and_never_opens_privkey(tmp_path, pair):
    certs, _ = pair
    store = CertStore(tmp_path / "state", tmp_path / "live")
    staged = store.stage(LINEAGE, certs)
    (staged / "privkey.pem").unlink()  # what the monitoring user cannot read might as well not be there
    with pytest.raises(StateError, match="privkey.pem: No such file"):
        read_dir(staged)
    public = read_dir(staged, private=False)
    assert public is not None and (public.cert, public.chain, public.fullchain, public.privkey) == (
        certs.cert, certs.chain, certs.fullchain, b"")
    assert read_dir(tmp_path / "nothing-here", private=False) is None


def test_with_a_monitoring_group_the_staging_area_is_group_readable_and_keys_stay_private(tmp_path, pair):
    certs, _ = pair
    gid = NOBODY if os.geteuid() == 0 else os.getgid()
    staged = CertStore(tmp_path / "state", tmp_path / "live", gid).stage(LINEAGE, certs)
    info = os.stat(tmp_path / "state" / "staging")
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o750, gid)
    assert_exactly(staged, certs)  # cert files 0644 in a 0755 directory; keys 0600
    assert stat.S_IMODE(os.stat(CertStore(tmp_path / "other", tmp_path / "live").stage(LINEAGE, certs)
                                .parent.parent).st_mode) == 0o700  # without the group: as before
