"""certbot-dane: DNS-01 through RFC 2136 and safe DANE TLSA rollover for certbot."""

__version__ = "0.1.0"
