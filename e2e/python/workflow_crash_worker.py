"""A workflow worker for the daprd crash test (runtime/tests/workflow.rs).

Registers `crashy`: six `step` activities in a chain. Each activity appends
`<instance> <step> start|end` to $STEP_LOG, so the test can tell which
activities ran and how often. Runs until killed.
"""

import os
import time

from dapr.ext.workflow import DaprWorkflowContext, WorkflowActivityContext, WorkflowRuntime

LOG = os.environ["STEP_LOG"]
wfr = WorkflowRuntime()


def record(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@wfr.activity(name="step")
def step(ctx: WorkflowActivityContext, arg):
    instance, n, acc = arg["instance"], arg["n"], arg["acc"]
    record(f"{instance} {n} start")
    time.sleep(0.3)
    record(f"{instance} {n} end")
    return acc * 2 + n


@wfr.workflow(name="crashy")
def crashy(ctx: DaprWorkflowContext, acc: int):
    for n in range(1, 7):
        acc = yield ctx.call_activity(step, input={"instance": ctx.instance_id, "n": n, "acc": acc})
    return acc


if __name__ == "__main__":
    wfr.start()
    record("worker ready")
    while True:
        time.sleep(1)
