from django.contrib import admin

from videoservice.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "model", "short_prompt", "private", "progress", "worker", "created_at",
                    "elapsed_s")
    list_filter = ("status", "model", "private")
    search_fields = ("id", "prompt", "owner", "worker")
    readonly_fields = ("id", "created_at", "started_at", "finished_at", "task_id", "attempts")
    date_hierarchy = "created_at"

    @admin.display(description="prompt")
    def short_prompt(self, job):
        return job.prompt[:60]
