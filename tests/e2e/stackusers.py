"""Users of a running stack, made as an operator would: ``manage.py shell`` on its database."""

from __future__ import annotations

import subprocess
import sys

from progrock.local.stack import Stack

_MAKE = (
    "from django.contrib.auth import get_user_model\n"
    "from progrock.auth import issue_token\n"
    "user = get_user_model().objects.create_user({name!r})\n"
    "print(user.pk, issue_token(user))\n"
)


def user_with_token(stack: Stack, name: str) -> tuple[int, str]:
    """A new user in the stack's database and a signed token for it (the stack's SECRET_KEY)."""
    result = subprocess.run(
        [sys.executable, "-m", "django", "shell", "-c", _MAKE.format(name=name)],
        env=stack._env(django=True),
        cwd=stack.data_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pk, token = result.stdout.split()[-2:]
    return int(pk), token
