"""The Python SDK's ActorProxy against actors hosted by the Python SDK's
FastAPI actor runtime behind two dapr-rs sidecars (DAPR_HTTP_PORT and
DAPR_HTTP_PORT_B), placed by dapr-placement; reminders and timers registered
by the actors themselves (Actor.register_reminder / register_timer)."""

import asyncio
import os
import time
import uuid

from dapr.actor import ActorId, ActorProxy
from dapr.conf import settings

from actor_app import CounterInterface, ReminderInterface

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


def reminder_proxy(actor_id: str) -> ReminderInterface:
    return ActorProxy.create('ReminderActor', ActorId(actor_id), ReminderInterface)


async def wait_events(p, kind: str, n: int, limit: float) -> list:
    end = time.time() + limit
    while True:
        got = [e for e in await p.Events() if e[0] == kind]
        if len(got) >= n or time.time() > end:
            return got
        await asyncio.sleep(0.05)


def assert_on_time(times: list, start: float, period: float):
    # First tick one second after registration, then every period (±100 ms;
    # the first also absorbs the registering call's own latency).
    assert abs(times[0] - (start + 1.0)) <= 0.25, f'first tick {times[0] - start:.3f}s after registering'
    for a, b in zip(times, times[1:]):
        assert abs((b - a) - period) <= 0.1, f'ticks {b - a:.3f}s apart, period {period}s'


def test_actor_registers_a_reminder_and_receives_it_on_time():
    async def run():
        settings.DAPR_HTTP_PORT = PORT_B
        p = reminder_proxy(f'rem-{uuid.uuid4().hex}')
        start = time.time()
        await p.StartReminder(300)
        got = await wait_events(p, 'reminder', 4, 6.0)
        assert len(got) >= 4, got
        assert all(e[1] == 'tick' and e[2] == 'reminder-state' for e in got), got
        assert_on_time([e[3] for e in got], start, 0.3)
        await p.StopReminder()
        await asyncio.sleep(0.4)
        n = len([e for e in await p.Events() if e[0] == 'reminder'])
        await asyncio.sleep(0.8)
        assert len([e for e in await p.Events() if e[0] == 'reminder']) == n, 'unregistered reminder still fires'

    asyncio.run(run())


def test_actor_registers_a_timer_and_receives_it_on_time():
    async def run():
        settings.DAPR_HTTP_PORT = PORT_A
        p = reminder_proxy(f'tim-{uuid.uuid4().hex}')
        start = time.time()
        await p.StartTimer(300)
        got = await wait_events(p, 'timer', 4, 6.0)
        assert len(got) >= 4, got
        assert all(e[1] == 'beat' and e[2] == 'timer-state' for e in got), got
        assert_on_time([e[3] for e in got], start, 0.3)
        await p.StopTimer()
        await asyncio.sleep(0.4)
        n = len([e for e in await p.Events() if e[0] == 'timer'])
        await asyncio.sleep(0.8)
        assert len([e for e in await p.Events() if e[0] == 'timer']) == n, 'unregistered timer still fires'

    asyncio.run(run())
