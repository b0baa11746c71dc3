"""A bare nameko RPC service for scenario (e): what one RPC round trip costs
with no database and no gateway. Run as ``nameko run benchmarks.echo``."""

from __future__ import annotations

from nameko.rpc import rpc


class EchoService:
    name = "bench_echo"

    @rpc
    def echo(self, x):
        return x
