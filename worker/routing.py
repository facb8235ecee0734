"""task_routes: generation tasks go to the queue named after their model, so a fleet can be split
(GPU hosts with `-Q ltx-video`, CPU hosts with `-Q builtin`)."""
GENERATE_TASK = "worker.tasks.generate_video"


def route_task(name, args, kwargs, options, task=None, **kw):
    if name == GENERATE_TASK:
        from generator.interface import DEFAULT_MODEL

        return {"queue": (kwargs or {}).get("model") or DEFAULT_MODEL}
    return None
