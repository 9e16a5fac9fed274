"""Demonstration tasks: a long one with progress, a failing one and an echo."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from .context import RunContext
from .registry import task


@task(name="demo.sleep")
def sleep(
    ctx: RunContext,
    seconds: Annotated[float, Field(ge=0, le=86_400)],
    steps: Annotated[int, Field(ge=1, le=10_000)] = 10,
) -> dict[str, float]:
    """Sleep for `seconds` in `steps` slices, reporting progress after each and honouring cancel."""
    ctx.log(f"sleeping {seconds} s in {steps} steps")
    ctx.progress(0, steps, "starting")
    for step in range(1, steps + 1):
        ctx.sleep(seconds / steps)
        ctx.progress(step, steps, f"step {step} of {steps}")
    ctx.log("done")
    return {"slept": seconds}


@task(name="demo.fail")
def fail(ctx: RunContext, message: str = "boom") -> None:
    """Raise RuntimeError(message): shows what a failed run looks like."""
    raise RuntimeError(message)


@task(name="demo.echo")
def echo(ctx: RunContext, value: Any) -> Any:
    """Return `value` unchanged: the cheapest round trip through the queue."""
    return value
