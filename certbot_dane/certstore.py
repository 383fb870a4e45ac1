"""Certificate files on disk: certbot's lineage, the staged copy, the deployed copy (atomic swap)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from certbot_dane import state
from certbot_dane.certificate import FILES, CertSet, fingerprint
from certbot_dane.errors import StateError

logger = logging.getLogger(__name__)

KEY_FILES = ("privkey.pem", "combined.pem")
VERSIONS = ".versions"
VERSION_DIR_MODE = 0o755


def read_lineage(cert: Path, chain: Path, fullchain: Path, privkey: Path) -> CertSet:
    """Read one certificate version as certbot wrote it (live/ symlinks resolved now, once)."""
    try:
        return CertSet(cert.read_bytes(), chain.read_bytes(), fullchain.read_bytes(), privkey.read_bytes())
    except OSError as err:
        raise StateError(f"cannot read certbot's certificate files: {err.filename}: {err.strerror}") from err


def read_dir(directory: Path, private: bool = True) -> CertSet | None:
    """Read cert.pem, chain.pem, fullchain.pem, privkey.pem from a directory; None if it has none.

    Without `private`, privkey.pem is not read (the set's `privkey` is empty): what a reader that
    must not need the key (status, as a monitoring user) gets.
    """
    try:
        if not (directory / "cert.pem").exists():
            return None
    except OSError as err:
        raise StateError(f"cannot read certificate files in {directory}: {err.strerror}") from err
    paths = [directory / name for name in FILES]
    if private:
        return read_lineage(*paths)
    try:
        cert, chain, fullchain = (path.read_bytes() for path in paths[:3])
    except OSError as err:
        raise StateError(f"cannot read certificate files: {err.filename}: {err.strerror}") from err
    return CertSet(cert, chain, fullchain, b"")


def _mode(name: str, gid: int | None) -> int:
    """The intended mode of a file in a version directory: keys 0600 (0640 with a key group), the rest 0644."""
    if name in KEY_FILES:
        return 0o640 if gid is not None else 0o600
    return 0o644


def _version_files(certs: CertSet) -> dict[str, bytes]:
    """Every file of a version directory and its content."""
    return certs.files() | {"combined.pem": certs.privkey + certs.fullchain}


def _mismatch(target: Path, files: dict[str, bytes], gid: int | None) -> str | None:
    """Why the existing `target` is not exactly the version directory we would write; None when it is.

    Ours (owner), our modes (directory 0755, keys as intended), regular files with one link each,
    the same names and the same bytes.
    """
    uid = os.geteuid()
    info = os.lstat(target)
    if not stat.S_ISDIR(info.st_mode):
        return "not a directory"
    if info.st_uid != uid:
        return f"owned by uid {info.st_uid}, not {uid}"
    if stat.S_IMODE(info.st_mode) != VERSION_DIR_MODE:
        return f"mode {stat.S_IMODE(info.st_mode):04o}, not {VERSION_DIR_MODE:04o}"
    extra = sorted(set(os.listdir(target)) ^ set(files))
    if extra:
        return f"holds other files than a version ({', '.join(extra)})"
    for name, data in files.items():
        info = os.lstat(target / name)
        mode = _mode(name, gid)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return f"{name} is not a plain file"
        if info.st_uid != uid:
            return f"{name} is owned by uid {info.st_uid}, not {uid}"
        if stat.S_IMODE(info.st_mode) != mode:
            return f"{name} has mode {stat.S_IMODE(info.st_mode):04o}, not {mode:04o}"
        if gid is not None and name in KEY_FILES and info.st_gid != gid:
            return f"{name} belongs to gid {info.st_gid}, not {gid}"
        if (target / name).read_bytes() != data:
            return f"{name} is not the file being written"
    return None


def _private_dir(path: Path, mode: int) -> None:
    """Create a directory we write certificate files under; refuse one that someone else could change."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as err:
        raise StateError(f"cannot create directory {path}: {err.strerror}") from err
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise StateError(f"{path} is not a directory owned by uid {os.geteuid()} and writable only by it "
                         f"(owner {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}); "
                         "certbot-dane writes no certificate files under it: move it away")


def _write_version(target: Path, certs: CertSet, gid: int | None) -> None:
    """Make `target` a version directory holding exactly `certs`, with our owner and the intended modes.

    An existing `target` is never trusted: it is kept only if it is exactly what would be written
    (then readers of it are not disturbed); otherwise the version is built complete in a fresh
    temporary directory, the existing one is moved aside and removed, and the new one renamed in.
    """
    files = _version_files(certs)
    tmp: Path | None = None
    try:
        _private_dir(target.parent, 0o755)
        if os.path.lexists(target):
            why = _mismatch(target, files, gid)
            if why is None:
                return
            logger.warning("%s is not what certbot-dane wrote (%s); replacing it", target, why)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        os.chmod(tmp, VERSION_DIR_MODE)
        for name, data in files.items():
            mode = _mode(name, gid)
            fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as handle:
                if name in KEY_FILES and gid is not None:
                    os.fchown(handle.fileno(), -1, gid)
                os.fchmod(handle.fileno(), mode)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        if os.path.lexists(target):  # renamed aside first: rename(2) cannot replace a non-empty directory
            aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.untrusted-"))
            os.rename(target, aside / target.name)
            _remove(aside)
        os.rename(tmp, target)
        tmp = None
        _fsync_dir(target.parent)
    except OSError as err:
        raise StateError(f"cannot write certificate files to {target}: {err.strerror}") from err
    finally:
        if tmp is not None:
            _remove(tmp)


def _remove(path: Path) -> None:
    """Remove a file, symlink or directory tree that is ours to remove; whatever cannot go stays."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(OSError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CertStore:
    """The staged and deployed copies of every lineage's certificate files."""

    def __init__(self, state_dir: Path, deploy_dir: Path, group: int | None = None) -> None:
        """`group`: the monitoring group, that may read the staging area (deployed versions are 0755 anyway)."""
        self.staging = state_dir / state.STAGING
        self.deploy_dir = deploy_dir
        self.group = group

    # -- staging -------------------------------------------------------------------------
    def staged_dir(self, lineage: str, fp: str) -> Path:
        """Where a staged version's files live."""
        return self.staging / lineage / fp[:16]

    def stage(self, lineage: str, certs: CertSet) -> Path:
        """Copy a version into the staging area (fsynced, keys 0600); returns its directory."""
        _private_dir(self.staging, 0o700)
        if self.group is not None:
            try:
                state.grant(self.staging, self.group, state.SHARED_DIR_MODE)
            except OSError as err:
                raise StateError(f"cannot let group {self.group} read {self.staging}: {err.strerror}") from err
        target = self.staged_dir(lineage, fingerprint(certs.cert))
        _write_version(target, certs, None)
        return target

    def read_staged(self, lineage: str, fp: str) -> CertSet:
        """The staged version's files; StateError if they are gone."""
        found = read_dir(self.staged_dir(lineage, fp))
        if found is None:
            raise StateError(f"the staged certificate of {lineage} is missing from "
                             f"{self.staged_dir(lineage, fp)}; run `certbot renew --force-renewal "
                             f"--cert-name {lineage}` to stage a new one")
        return found

    def prune_staging(self, lineage: str, keep: str | None) -> None:
        """Remove staged copies other than `keep` (a fingerprint), e.g. after a swap or re-stage."""
        base = self.staging / lineage
        if not base.is_dir():
            return
        for entry in base.iterdir():  # also what a killed run left: .<fp>.tmp-*, .<fp>.untrusted-*
            if keep is None or entry.name != keep[:16]:
                _remove(entry)

    # -- deployed ------------------------------------------------------------------------
    def live_dir(self, lineage: str) -> Path:
        """What services point at: <deploy_dir>/<lineage>/ (a symlink to a version directory)."""
        return self.deploy_dir / lineage

    def deployed_fingerprint(self, lineage: str) -> str | None:
        """Fingerprint of the certificate services read now, None if nothing is deployed."""
        try:
            return fingerprint((self.live_dir(lineage) / "cert.pem").read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise StateError(f"cannot read the deployed certificate {self.live_dir(lineage)}/cert.pem: {err}") from err

    def swap(self, lineage: str, certs: CertSet, gid: int | None) -> None:
        """Make `certs` the deployed version in one rename(2) of a symlink: readers see old or new."""
        fp = fingerprint(certs.cert)
        _private_dir(self.deploy_dir / VERSIONS, 0o755)
        _write_version(self.deploy_dir / VERSIONS / lineage / fp[:16], certs, gid)
        link = self.live_dir(lineage)
        if link.exists() and not link.is_symlink():
            raise StateError(f"{link} exists and is not a symlink certbot-dane made; move it away")
        prefix = f".{lineage}.link-"
        tmp = link.with_name(f"{prefix}{os.getpid()}")
        try:
            for entry in self.deploy_dir.iterdir():  # ours, left by a run killed before its rename
                if entry.name.startswith(prefix) and entry.name[len(prefix):].isdigit() and entry.is_symlink():
                    _remove(entry)
            os.symlink(Path(VERSIONS) / lineage / fp[:16], tmp)
            os.replace(tmp, link)
            _fsync_dir(self.deploy_dir)
        except OSError as err:
            raise StateError(f"cannot switch {link} to the new certificate: {err.strerror}") from err
        logger.info("%s: deployed certificate %s in %s", lineage, fp[:16], link)

    def prune_versions(self, lineage: str, keep: set[str]) -> None:
        """Remove deployed version directories except those of the `keep` fingerprints."""
        versions = self.deploy_dir / VERSIONS / lineage
        if not versions.is_dir():
            return
        wanted = {fp[:16] for fp in keep}
        for entry in versions.iterdir():  # also what a killed run left: .<fp>.tmp-*, .<fp>.untrusted-*
            if entry.name not in wanted:
                _remove(entry)
