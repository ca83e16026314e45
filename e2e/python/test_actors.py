"""The Python SDK's ActorProxy against actors hosted by the Python SDK's
FastAPI actor runtime behind two dapr-rs sidecars (DAPR_HTTP_PORT and
DAPR_HTTP_PORT_B), placed by dapr-placement."""

import asyncio
import os
import uuid

from dapr.actor import ActorId, ActorProxy
from dapr.conf import settings

from actor_app import CounterInterface

PORT_A = int(os.environ['DAPR_HTTP_PORT'])
PORT_B = int(os.environ['DAPR_HTTP_PORT_B'])


def proxy(actor_id: str) -> CounterInterface:
    return ActorProxy.create('CounterActor', ActorId(actor_id), CounterInterface)


async def via(port: int, coro_fn):
    settings.DAPR_HTTP_PORT = port
    return await coro_fn()


def test_single_activation_through_both_sidecars():
    async def run():
        aid = f'py-{uuid.uuid4().hex}'
        host_a = await via(PORT_A, lambda: proxy(aid).WhoAmI())
        host_b = await via(PORT_B, lambda: proxy(aid).WhoAmI())
        assert host_a == host_b
        assert await via(PORT_A, lambda: proxy(aid).Increment(2)) == 2
        assert await via(PORT_B, lambda: proxy(aid).Increment(3)) == 5
        assert await via(PORT_A, lambda: proxy(aid).Get()) == 5

    asyncio.run(run())


def test_concurrent_increments_do_not_lose_updates():
    async def run():
        settings.DAPR_HTTP_PORT = PORT_A
        aid = f'py-{uuid.uuid4().hex}'
        p = proxy(aid)
        await asyncio.gather(*(p.Increment(1) for _ in range(20)))
        assert await p.Get() == 20

    asyncio.run(run())


def test_ids_spread_over_both_hosts():
    async def run():
        settings.DAPR_HTTP_PORT = PORT_B
        hosts = set()
        for i in range(30):
            hosts.add(await proxy(f'spread-{i}-{uuid.uuid4().hex[:6]}').WhoAmI())
        assert hosts == {'A', 'B'}

    asyncio.run(run())
