"""`python manage.py webhook_secret USER`: print the key USER's webhook deliveries are signed with
(HMAC-SHA256, videoservice/webhooks.py; made on first use)."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from videoservice.models import WebhookSecret


class Command(BaseCommand):
    help = "Print USER's webhook signing secret."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, username, **options):
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        self.stdout.write(WebhookSecret.of(user))
