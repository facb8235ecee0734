from django.contrib import admin, messages

from videoservice.models import ApiToken, Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "model", "short_prompt", "private", "progress", "worker", "created_at",
                    "elapsed_s")
    list_filter = ("status", "model", "private")
    search_fields = ("id", "prompt", "owner", "worker")
    readonly_fields = ("id", "created_at", "started_at", "finished_at", "attempts")
    date_hierarchy = "created_at"

    @admin.display(description="prompt")
    def short_prompt(self, job):
        return job.prompt[:60]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Adding a token here shows it once in a message; only its hash is stored."""
    list_display = ("hint", "user", "name", "created_at", "last_used_at")
    search_fields = ("user__username", "name", "hint")
    fields = ("user", "name", "hint", "created_at", "last_used_at")
    readonly_fields = ("hint", "created_at", "last_used_at")

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return
        import secrets

        token = ApiToken.PREFIX + secrets.token_urlsafe(32)
        obj.digest, obj.hint = ApiToken.hash(token), token[:10]
        super().save_model(request, obj, form, change)
        messages.warning(request, f"API token for {obj.user}: {token}  (copy it now: it is not shown again)")
