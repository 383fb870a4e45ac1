"""Certificate files on disk: certbot's lineage, the staged copy, the deployed copy (atomic swap)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from certbot_dane.certificate import FILES, CertSet, fingerprint
from certbot_dane.errors import StateError

logger = logging.getLogger(__name__)

KEY_FILES = ("privkey.pem", "combined.pem")
VERSIONS = ".versions"


def read_lineage(cert: Path, chain: Path, fullchain: Path, privkey: Path) -> CertSet:
    """Read one certificate version as certbot wrote it (live/ symlinks resolved now, once)."""
    try:
        return CertSet(cert.read_bytes(), chain.read_bytes(), fullchain.read_bytes(), privkey.read_bytes())
    except OSError as err:
        raise StateError(f"cannot read certbot's certificate files: {err.filename}: {err.strerror}") from err


def read_dir(directory: Path) -> CertSet | None:
    """Read cert.pem, chain.pem, fullchain.pem, privkey.pem from a directory; None if it has none."""
    if not (directory / "cert.pem").exists():
        return None
    return read_lineage(*(directory / name for name in FILES))


def _write_version(target: Path, certs: CertSet, gid: int | None) -> None:
    """Write a complete version directory at `target`, atomically (temp dir + rename)."""
    if target.is_dir():
        return  # renamed into place only once complete
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        os.chmod(tmp, 0o755)
        files = certs.files() | {"combined.pem": certs.privkey + certs.fullchain}
        for name, data in files.items():
            secret = name in KEY_FILES
            mode = (0o640 if gid is not None else 0o600) if secret else 0o644
            fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                if secret and gid is not None:
                    os.fchown(handle.fileno(), -1, gid)
                os.fchmod(handle.fileno(), mode)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StateError(f"cannot write certificate files to {target}: {err.strerror}") from err


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CertStore:
    """The staged and deployed copies of every lineage's certificate files."""

    def __init__(self, state_dir: Path, deploy_dir: Path) -> None:
        self.staging = state_dir / "staging"
        self.deploy_dir = deploy_dir

    # -- staging -------------------------------------------------------------------------
    def staged_dir(self, lineage: str, fp: str) -> Path:
        """Where a staged version's files live."""
        return self.staging / lineage / fp[:16]

    def stage(self, lineage: str, certs: CertSet) -> Path:
        """Copy a version into the staging area (fsynced, keys 0600); returns its directory."""
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        for entry in base.iterdir():
            if keep is None or entry.name != keep[:16]:
                shutil.rmtree(entry, ignore_errors=True)

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
        versions = self.deploy_dir / VERSIONS / lineage
        _write_version(versions / fp[:16], certs, gid)
        link = self.live_dir(lineage)
        if link.exists() and not link.is_symlink():
            raise StateError(f"{link} exists and is not a symlink certbot-dane made; move it away")
        tmp = link.with_name(f".{lineage}.link-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
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
        for entry in versions.iterdir():
            if entry.name not in wanted:
                shutil.rmtree(entry, ignore_errors=True)
