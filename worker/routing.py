"""task_routes: generation tasks go to their model's queue (the `queue` of its configuration entry,
by default the model's name), so a fleet can be split (GPU hosts with `-Q ltx-video`, CPU hosts
with `-Q builtin`); describe jobs (video understanding) all go to the `describe` queue."""
GENERATE_TASK = "worker.tasks.generate_video"
DESCRIBE_TASK = "worker.tasks.describe_video"
DESCRIBE_QUEUE = "describe"


def queue_of(model):
    """The queue serving `model` (None: the default model)."""
    from generator.interface import DEFAULT_MODEL, get_info

    name = model or DEFAULT_MODEL
    info = get_info(name)
    return (info.extra.get("queue") if info is not None else None) or name


def models_of(queue: str) -> list:
    """The models a worker consuming `queue` serves."""
    from generator.interface import list_models

    return [info.name for info in list_models() if (info.extra.get("queue") or info.name) == queue]


def route_task(name, args, kwargs, options, task=None, **kw):
    if name == GENERATE_TASK:
        return {"queue": queue_of((kwargs or {}).get("model"))}
    if name == DESCRIBE_TASK:
        return {"queue": DESCRIBE_QUEUE}
    return None
