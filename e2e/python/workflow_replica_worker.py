"""A workflow worker for the two-replica test (runtime/tests/workflow.rs).

Run once per replica with $WORKER naming it. Registers `fan` (runs n `where`
activities in parallel, returns the workers that ran them) and `waiter`
(returns the input of its `go` event). Each activity appends
`<instance> <i> <worker>` to $STEP_LOG. Runs until killed.
"""

import os
import time

from dapr.ext.workflow import DaprWorkflowContext, WorkflowActivityContext, WorkflowRuntime, when_all

LOG = os.environ["STEP_LOG"]
NAME = os.environ["WORKER"]
wfr = WorkflowRuntime()


def record(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@wfr.activity(name="where")
def where(ctx: WorkflowActivityContext, arg):
    record(f"{arg['instance']} {arg['i']} {NAME}")
    time.sleep(0.05)
    return NAME


@wfr.workflow(name="fan")
def fan(ctx: DaprWorkflowContext, n: int):
    tasks = [ctx.call_activity(where, input={"instance": ctx.instance_id, "i": i}) for i in range(n)]
    return (yield when_all(tasks))


@wfr.workflow(name="waiter")
def waiter(ctx: DaprWorkflowContext, _):
    return (yield ctx.wait_for_external_event("go"))


if __name__ == "__main__":
    wfr.start()
    record(f"worker ready {NAME}")
    while True:
        time.sleep(1)
