"""A Python SDK actor host (dapr.ext.fastapi.DaprActor) for the actor tests.

Run: APP_PORT=... APP_NAME=... DAPR_HTTP_PORT=<its sidecar> python3 actor_app.py
"""

import asyncio
import os
import time
from datetime import timedelta

import uvicorn
from dapr.actor import Actor, ActorInterface, Remindable, actormethod
from dapr.actor.runtime.config import ActorRuntimeConfig
from dapr.actor.runtime.runtime import ActorRuntime
from dapr.ext.fastapi import DaprActor
from fastapi import FastAPI


class CounterInterface(ActorInterface):
    @actormethod(name='Increment')
    async def increment(self, by: int) -> int: ...

    @actormethod(name='Get')
    async def get(self) -> int: ...

    @actormethod(name='WhoAmI')
    async def who_am_i(self) -> str: ...


class CounterActor(Actor, CounterInterface):
    async def increment(self, by: int) -> int:
        has, value = await self._state_manager.try_get_state('count')
        value = (value if has else 0) + by
        # A racing call would lose updates here: turns make it safe.
        await asyncio.sleep(0.005)
        await self._state_manager.set_state('count', value)
        await self._state_manager.save_state()
        return value

    async def get(self) -> int:
        has, value = await self._state_manager.try_get_state('count')
        return value if has else 0

    async def who_am_i(self) -> str:
        return os.environ.get('APP_NAME', '?')


class ReminderInterface(ActorInterface):
    @actormethod(name='StartReminder')
    async def start_reminder(self, period_ms: int) -> None: ...

    @actormethod(name='StopReminder')
    async def stop_reminder(self) -> None: ...

    @actormethod(name='StartTimer')
    async def start_timer(self, period_ms: int) -> None: ...

    @actormethod(name='StopTimer')
    async def stop_timer(self) -> None: ...

    @actormethod(name='Events')
    async def events(self) -> list: ...


# Callbacks per actor id, kept by this process: [kind, name, payload, unix time].
EVENTS: dict = {}


class ReminderActor(Actor, ReminderInterface, Remindable):
    def _record(self, kind: str, name: str, payload) -> None:
        EVENTS.setdefault(self.id.id, []).append([kind, name, payload, time.time()])

    async def start_reminder(self, period_ms: int) -> None:
        await self.register_reminder(
            'tick', b'reminder-state', timedelta(seconds=1), timedelta(milliseconds=period_ms)
        )

    async def stop_reminder(self) -> None:
        await self.unregister_reminder('tick')

    async def start_timer(self, period_ms: int) -> None:
        await self.register_timer(
            'beat', self.on_beat, 'timer-state', timedelta(seconds=1), timedelta(milliseconds=period_ms)
        )

    async def stop_timer(self) -> None:
        await self.unregister_timer('beat')

    async def events(self) -> list:
        return EVENTS.get(self.id.id, [])

    async def on_beat(self, state) -> None:
        self._record('timer', 'beat', state)

    async def receive_reminder(self, name, state, due_time, period, ttl=None) -> None:
        self._record('reminder', name, state.decode() if isinstance(state, bytes) else state)


app = FastAPI()
actor = DaprActor(app)
ActorRuntime.set_actor_config(
    ActorRuntimeConfig(actor_idle_timeout=timedelta(hours=1), actor_scan_interval=timedelta(seconds=30))
)


@app.on_event('startup')
async def startup():
    await actor.register_actor(CounterActor)
    await actor.register_actor(ReminderActor)


if __name__ == '__main__':
    uvicorn.run(app, host='127.0.0.1', port=int(os.environ['APP_PORT']), log_level='warning')
