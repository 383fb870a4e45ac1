"""Real loopback servers (BIND `named`, Pebble) for certbot-dane's tests, demo and benchmarks."""

from sandbox.servers import NamedServer, Pebble, Sandbox, SandboxError, TsigKey, ZoneSpec

__all__ = ["NamedServer", "Pebble", "Sandbox", "SandboxError", "TsigKey", "ZoneSpec"]
