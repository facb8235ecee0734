"""`python manage.py create_api_token USER [--name NAME] [--create-user] [--staff]`: print a new API token.

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

    def handle(self, username, name, create_user, staff, **options):
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
        _, token = ApiToken.issue(user, name)
        self.stdout.write(token)
