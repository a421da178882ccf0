"""The sandbox carrier: a Twilio-compatible server for the demo, the tests and the benchmarks."""

from sandbox.carrier import SandboxCarrier
from sandbox.config import Rule, SandboxConfig

__all__ = ["Rule", "SandboxCarrier", "SandboxConfig"]
