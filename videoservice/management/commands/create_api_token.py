"""`python manage.py create_api_token USER [--name NAME] [--create-user] [--staff] [--priority]`: print a
new API token (`--priority`: it may submit jobs with a priority above 0).

The token is printed once (only its SHA-256 is stored). Scripts send it as
`Authorization: Bearer <token>` (HTTP and websocket handshake) or `?token=<token>` (websocket).
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from videoservice.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for USER and print it (shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for")
        parser.add_argument("--create-user", action="store_true",
                            help="create USER (without a password: token access only) if it does not exist")
        parser.add_argument("--staff", action="store_true", help="with --create-user: make the user staff")
        parser.add_argument("--priority", action="store_true", help="the token may raise a job's priority above 0")

    def handle(self, username, name, create_user, staff, priority, **options):
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        if user is None:
            if not create_user:
                raise CommandError(f"no user {username!r} (create it with `manage.py createsuperuser`, "
                                   "the admin, or pass --create-user)")
            user = User.objects.create_user(username, is_staff=staff)
            user.set_unusable_password()
            user.save()
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive")
        row, token = ApiToken.issue(user, name)
        if priority:
            ApiToken.objects.filter(pk=row.pk).update(can_prioritize=True)
        self.stdout.write(token)
