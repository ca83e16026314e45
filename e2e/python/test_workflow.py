"""Workflows through daprd with the official Python SDK (dapr.ext.workflow).

One WorkflowRuntime (the worker) and one DaprWorkflowClient talk to the
sidecar at DAPR_GRPC_PORT for the whole module.
"""

import os
import time
from datetime import timedelta

import pytest
import requests
from dapr.ext.workflow import (
    DaprWorkflowClient,
    DaprWorkflowContext,
    RetryPolicy,
    WorkflowActivityContext,
    WorkflowRuntime,
    WorkflowStatus,
    when_all,
    when_any,
)

HTTP = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}"
RUN = str(int(time.time() * 1000))

wfr = WorkflowRuntime()
flaky_calls = {}


@wfr.activity(name="add_one")
def add_one(ctx: WorkflowActivityContext, x: int) -> int:
    return x + 1


@wfr.activity(name="square")
def square(ctx: WorkflowActivityContext, x: int) -> int:
    return x * x


@wfr.activity(name="flaky")
def flaky(ctx: WorkflowActivityContext, key: str) -> str:
    n = flaky_calls.get(key, 0) + 1
    flaky_calls[key] = n
    if n < 3:
        raise RuntimeError(f"attempt {n} fails")
    return f"ok after {n}"


@wfr.activity(name="always_fails")
def always_fails(ctx: WorkflowActivityContext, _) -> None:
    raise ValueError("this activity always fails")


@wfr.workflow(name="chain")
def chain(ctx: DaprWorkflowContext, x: int):
    x = yield ctx.call_activity(add_one, input=x)
    x = yield ctx.call_activity(square, input=x)
    x = yield ctx.call_activity(add_one, input=x)
    return x


@wfr.workflow(name="fan_out")
def fan_out(ctx: DaprWorkflowContext, n: int):
    tasks = [ctx.call_activity(square, input=i) for i in range(n)]
    results = yield when_all(tasks)
    return sum(results)


@wfr.workflow(name="sleeper")
def sleeper(ctx: DaprWorkflowContext, seconds: float):
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=seconds))
    return (ctx.current_utc_datetime - start).total_seconds()


@wfr.workflow(name="approval")
def approval(ctx: DaprWorkflowContext, _):
    approved = ctx.wait_for_external_event("approve")
    timeout = ctx.create_timer(timedelta(seconds=30))
    winner = yield when_any([approved, timeout])
    if winner == timeout:
        return "timed out"
    return f"approved by {approved.get_result()}"


@wfr.workflow(name="parent")
def parent(ctx: DaprWorkflowContext, x: int):
    a = yield ctx.call_child_workflow(chain, input=x)
    b = yield ctx.call_child_workflow(chain, input=a)
    return [a, b]


@wfr.workflow(name="retrying")
def retrying(ctx: DaprWorkflowContext, key: str):
    policy = RetryPolicy(
        first_retry_interval=timedelta(milliseconds=100),
        max_number_of_attempts=3,
    )
    return (yield ctx.call_activity(flaky, input=key, retry_policy=policy))


@wfr.workflow(name="failing")
def failing(ctx: DaprWorkflowContext, _):
    yield ctx.call_activity(always_fails, input=None)


@wfr.workflow(name="counter")
def counter(ctx: DaprWorkflowContext, n: int):
    if n < 3:
        yield ctx.call_activity(add_one, input=n)
        ctx.continue_as_new(n + 1)
        return None
    return n


@wfr.workflow(name="status_setter")
def status_setter(ctx: DaprWorkflowContext, _):
    ctx.set_custom_status("waiting for go")
    yield ctx.wait_for_external_event("go")
    return "went"


@pytest.fixture(scope="module", autouse=True)
def runtime():
    wfr.start()
    yield
    wfr.shutdown()


@pytest.fixture(scope="module")
def client():
    c = DaprWorkflowClient()
    yield c
    c.close()


def completed(client, iid, timeout=30):
    state = client.wait_for_workflow_completion(iid, timeout_in_seconds=timeout)
    assert state is not None, f"{iid} vanished"
    return state


def test_activity_chain(client):
    iid = client.schedule_new_workflow(chain, input=2, instance_id=f"chain-{RUN}")
    assert iid == f"chain-{RUN}"
    state = completed(client, iid)
    assert state.runtime_status == WorkflowStatus.COMPLETED
    # ((2 + 1) ** 2) + 1
    assert state.serialized_output == "10"
    assert state.serialized_input == "2"


def test_fan_out_of_100_activities(client):
    iid = client.schedule_new_workflow(fan_out, input=100)
    state = completed(client, iid, timeout=60)
    assert state.runtime_status == WorkflowStatus.COMPLETED
    assert int(state.serialized_output) == sum(i * i for i in range(100))


def test_durable_timer_waits(client):
    t0 = time.monotonic()
    iid = client.schedule_new_workflow(sleeper, input=1.0)
    state = completed(client, iid)
    assert state.runtime_status == WorkflowStatus.COMPLETED
    assert time.monotonic() - t0 >= 1.0
    assert float(state.serialized_output) >= 1.0


def test_external_event_raised_while_waiting(client):
    iid = client.schedule_new_workflow(approval, input=None)
    client.wait_for_workflow_start(iid, timeout_in_seconds=10)
    time.sleep(0.2)
    client.raise_workflow_event(iid, "approve", data="alice")
    state = completed(client, iid)
    assert state.serialized_output == '"approved by alice"'


def test_external_event_raised_before_waiting_is_buffered(client):
    iid = f"early-{RUN}"
    client.schedule_new_workflow(approval, input=None, instance_id=iid)
    client.raise_workflow_event(iid, "approve", data="bob")
    state = completed(client, iid)
    assert state.serialized_output == '"approved by bob"'


def test_child_workflows(client):
    iid = client.schedule_new_workflow(parent, input=1)
    state = completed(client, iid)
    assert state.runtime_status == WorkflowStatus.COMPLETED
    # chain(1) = 5, chain(5) = 37
    assert state.serialized_output == "[5, 37]"


def test_retry_policy_retries_a_failing_activity(client):
    iid = client.schedule_new_workflow(retrying, input=f"k-{RUN}")
    state = completed(client, iid)
    assert state.runtime_status == WorkflowStatus.COMPLETED
    assert state.serialized_output == '"ok after 3"'


def test_activity_failure_fails_the_workflow(client):
    iid = client.schedule_new_workflow(failing, input=None)
    state = completed(client, iid)
    assert state.runtime_status == WorkflowStatus.FAILED
    assert "always fails" in state.failure_details.message


def test_continue_as_new(client):
    iid = client.schedule_new_workflow(counter, input=0)
    state = completed(client, iid)
    assert state.runtime_status == WorkflowStatus.COMPLETED
    assert state.serialized_output == "3"


def test_terminate(client):
    iid = client.schedule_new_workflow(approval, input=None)
    client.wait_for_workflow_start(iid, timeout_in_seconds=10)
    client.terminate_workflow(iid, output="stopped")
    state = completed(client, iid)
    assert state.runtime_status == WorkflowStatus.TERMINATED


def test_suspend_and_resume_with_custom_status(client):
    iid = client.schedule_new_workflow(status_setter, input=None)
    client.wait_for_workflow_start(iid, timeout_in_seconds=10)
    deadline = time.monotonic() + 10
    # The SDK stores the custom status as it was set (passed through untouched).
    while (client.get_workflow_state(iid).serialized_custom_status or "").strip('"') != "waiting for go":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.pause_workflow(iid)
    assert client.get_workflow_state(iid).runtime_status == WorkflowStatus.SUSPENDED
    client.raise_workflow_event(iid, "go")
    time.sleep(0.5)
    # Suspended: the event waits.
    assert client.get_workflow_state(iid).runtime_status == WorkflowStatus.SUSPENDED
    client.resume_workflow(iid)
    state = completed(client, iid)
    assert state.serialized_output == '"went"'


def test_purge(client):
    iid = client.schedule_new_workflow(chain, input=0)
    completed(client, iid)
    client.purge_workflow(iid)
    assert client.get_workflow_state(iid) is None


def test_rerun_from_an_activity_with_a_new_input(client):
    import grpc
    from dapr.ext.workflow import WorkflowHistoryEventType

    src = client.schedule_new_workflow(chain, input=2, instance_id=f"rerun-src-{RUN}")
    assert completed(client, src).serialized_output == "10"
    history = client.get_workflow_history(src)
    squares = [
        e
        for e in history
        if e.event_type == WorkflowHistoryEventType.TASK_SCHEDULED and e.name == "square"
    ]
    assert len(squares) == 1 and squares[0].is_rerunnable
    # Rerun from `square` fed 4 instead of 3: 4 * 4 + 1; the first add_one's
    # result is kept from the source history.
    new = client.rerun_workflow_from_event(
        src, squares[0].event_id, new_instance_id=f"rerun-dst-{RUN}", input=4
    )
    assert new == f"rerun-dst-{RUN}"
    state = completed(client, new)
    assert state.runtime_status == WorkflowStatus.COMPLETED
    assert state.serialized_output == "17"
    # The source is left as it was.
    assert client.get_workflow_state(src).serialized_output == "10"

    def code_of(**kwargs):
        with pytest.raises(grpc.RpcError) as e:
            client.rerun_workflow_from_event(**kwargs)
        return e.value.code()

    event = squares[0].event_id
    assert code_of(instance_id=src, event_id=event, new_instance_id=new) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    assert code_of(instance_id=src, event_id=9999) == grpc.StatusCode.NOT_FOUND
    assert code_of(instance_id=f"missing-{RUN}", event_id=event) == grpc.StatusCode.NOT_FOUND
    assert code_of(instance_id=src, event_id=event, new_instance_id=src) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    waiting = client.schedule_new_workflow(approval, input=None)
    client.wait_for_workflow_start(waiting, timeout_in_seconds=30)
    assert code_of(instance_id=waiting, event_id=0) == grpc.StatusCode.INVALID_ARGUMENT
    client.terminate_workflow(waiting)


def test_http_management_api(client):
    iid = f"http-{RUN}"
    r = requests.post(f"{HTTP}/v1.0/workflows/dapr/approval/start?instanceID={iid}", data="{}")
    assert r.status_code == 202, r.text
    assert r.json() == {"instanceID": iid}
    r = requests.get(f"{HTTP}/v1.0/workflows/dapr/{iid}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["instanceID"] == iid
    assert body["workflowName"] == "approval"
    assert body["runtimeStatus"] in ("PENDING", "RUNNING")
    assert body["properties"]["dapr.workflow.input"] == "{}"
    r = requests.post(f"{HTTP}/v1.0-beta1/workflows/dapr/{iid}/raiseEvent/approve", data='"http"')
    assert r.status_code == 202, r.text
    state = completed(client, iid)
    assert state.serialized_output == '"approved by http"'
    r = requests.get(f"{HTTP}/v1.0/workflows/dapr/{iid}")
    assert r.json()["runtimeStatus"] == "COMPLETED"
    assert r.json()["properties"]["dapr.workflow.output"] == '"approved by http"'
    r = requests.post(f"{HTTP}/v1.0/workflows/dapr/{iid}/purge")
    assert r.status_code == 202, r.text
    r = requests.get(f"{HTTP}/v1.0/workflows/dapr/{iid}")
    assert r.status_code == 404
    assert r.json()["errorCode"] == "ERR_INSTANCE_ID_NOT_FOUND"


def test_http_errors():
    r = requests.post(f"{HTTP}/v1.0/workflows/dapr/chain/start?instanceID=bad%20id")
    assert r.status_code == 400
    assert r.json()["errorCode"] == "ERR_INSTANCE_ID_INVALID"
    r = requests.post(f"{HTTP}/v1.0/workflows/dapr/chain/start?instanceID={'x' * 65}")
    assert r.status_code == 400
    assert r.json()["errorCode"] == "ERR_INSTANCE_ID_TOO_LONG"
    r = requests.post(f"{HTTP}/v1.0/workflows/other/chain/start")
    assert r.status_code == 400
    assert r.json()["errorCode"] == "ERR_WORKFLOW_COMPONENT_NOT_FOUND"
    r = requests.post(f"{HTTP}/v1.0/workflows/dapr/nope-{RUN}/terminate")
    assert r.status_code == 404
    assert r.json()["errorCode"] == "ERR_INSTANCE_ID_NOT_FOUND"
