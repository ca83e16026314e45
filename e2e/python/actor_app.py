"""A Python SDK actor host (dapr.ext.fastapi.DaprActor) for the actor tests.

Run: APP_PORT=... APP_NAME=... DAPR_HTTP_PORT=<its sidecar> python3 actor_app.py
"""

import asyncio
import os
from datetime import timedelta

import uvicorn
from dapr.actor import Actor, ActorInterface, actormethod
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


app = FastAPI()
actor = DaprActor(app)
ActorRuntime.set_actor_config(
    ActorRuntimeConfig(actor_idle_timeout=timedelta(hours=1), actor_scan_interval=timedelta(seconds=30))
)


@app.on_event('startup')
async def startup():
    await actor.register_actor(CounterActor)


if __name__ == '__main__':
    uvicorn.run(app, host='127.0.0.1', port=int(os.environ['APP_PORT']), log_level='warning')
