"""`python manage.py queue ACTION [...]`: operator controls of the job queue (videoservice/dispatch.py).

    manage.py queue status                 paused models, and each queue's waiting jobs in order
    manage.py queue pause [MODEL]          stop dispatching MODEL's jobs (default: every model's)
    manage.py queue resume [MODEL]         dispatch again (a turn per waiting job)
    manage.py queue front JOB_ID           move a waiting job to the front of its queue
    manage.py queue retry JOB_ID           submit a failed or cancelled job again (a new, linked job)
"""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from videoservice import dispatch
from videoservice.contract import RequestError
from videoservice.models import DispatchPause, Job, Submitter


class Command(BaseCommand):
    help = "Pause, resume and reorder the job queue; retry a job."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "pause", "resume", "front", "retry"])
        parser.add_argument("target", nargs="?", help="a model (pause, resume; default: all) or a job id")

    def handle(self, action, target, **options):
        try:
            getattr(self, action)(target)
        except RequestError as err:
            raise CommandError(err.message) from None

    def status(self, target):
        paused = sorted(DispatchPause.paused())
        self.stdout.write(f"paused: {', '.join(paused) if paused else 'nothing'}")
        queues = Job.objects.filter(status=Job.Status.QUEUED).values_list("queue", flat=True).distinct()
        for queue in sorted(set(queues)):
            order = Job.objects.dispatch_order(queue)
            self.stdout.write(f"queue {queue}: {len(order)} waiting")
            for position, job in enumerate(order):
                self.stdout.write(f"  {position:3d}  {job.pk}  {job.model}  priority {job.priority}  {job.owner}")

    def pause(self, target):
        Job.objects.pause(target or dispatch.ALL_MODELS)
        self.stdout.write(f"paused {target or 'every model'}")

    def resume(self, target):
        sent = Job.objects.resume(target or dispatch.ALL_MODELS)
        self.stdout.write(f"resumed {target or 'every model'} ({sent} turns)")

    def _job(self, target) -> Job:
        if not target:
            raise CommandError("give a job id")
        job = Job.objects.filter(pk=target).first() if len(target) >= 32 else None
        if job is None:
            raise CommandError(f"no job {target}")
        return job

    def front(self, target):
        job = self._job(target)
        if not job.promote():
            raise CommandError(f"job {job.pk} is {job.status}, not waiting")
        job.refresh_from_db()
        self.stdout.write(f"job {job.pk} is now at position {job.position()}")

    def retry(self, target):
        job = self._job(target)
        new = job.retry(Submitter(owner=job.owner, user=job.user, address=job.client_address, staff=True))
        self.stdout.write(str(new.pk))
