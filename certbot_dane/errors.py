"""The one exception hierarchy of certbot-dane; messages carry context, never secrets."""


class DaneError(Exception):
    """Something certbot-dane reports to the user as one clear line."""


class ConfigError(DaneError):
    """The configuration file or TSIG key file is missing, malformed or unsafe."""


class DnsError(DaneError):
    """A DNS server could not be reached or did not do what was asked."""


class ServerUnreachable(DnsError):
    """A DNS server did not answer in time or refused the connection."""


class UpdateRejected(DnsError):
    """The primary answered an UPDATE with an error rcode (REFUSED, NOTAUTH, ...)."""


class UpdateIgnored(DnsError):
    """The primary answered an UPDATE with NOERROR but does not serve the change (a policy dropped it)."""


class TsigRejected(DnsError):
    """The server rejected our TSIG signature (BADKEY, BADSIG, BADTIME)."""


class ZoneNotFound(DnsError):
    """No zone on the primary is authoritative for a name."""


class PropagationTimeout(DnsError):
    """Some authoritative servers still did not serve the expected records in time."""


class StateError(DaneError):
    """A state file is unreadable, corrupt, or cannot be written."""


class LockBusy(DaneError):
    """Another certbot-dane process holds the lock."""


class CertError(DaneError):
    """A certificate or key cannot be staged or deployed (mismatch, expired, unreadable)."""


class ReloadFailed(DaneError):
    """A configured reload command failed; its output is in the message."""


class VerifyFailed(DaneError):
    """An endpoint serves a certificate that matches no published TLSA record, or cannot be checked."""


class WakeError(DaneError):
    """The next deploy run could not be scheduled (systemd-run or systemctl failed); the hourly run still comes."""


class ReportError(DaneError):
    """A TLSRPT report cannot be read (not a report, malformed, truncated, oversized); skipped, nothing stored lost."""


class MtaStsError(DaneError):
    """An MTA-STS policy cannot be written, is not served as intended, or a certificate would break it."""
