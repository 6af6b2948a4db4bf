#!/usr/bin/env python
"""Management entry point of the baseline project (``python manage.py rundelay``)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "classicport.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
