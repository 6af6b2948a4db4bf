"""URLs of the HTTP API (JSON, long-poll follow, HTML fragments): ``include("progrock.urls")``."""

from __future__ import annotations

from django.urls import path, re_path

from progrock.web import follow, fragment, guards, views

app_name = "progrock"
urlpatterns = [
    path("tasks/", views.task_list, name="task-list"),
    path("tasks/<str:task_id>/", views.task_detail, name="task-detail"),
    path("tasks/<str:task_id>/cancel/", views.task_cancel, name="task-cancel"),
    path("tasks/<str:task_id>/fragment/", fragment.task_fragment, name="task-fragment"),
    path("follow/", follow.follow, name="follow"),
    # Last: any other path under the prefix is a JSON 404, not the project's HTML page.
    re_path(r"^(?P<rest>.*)$", guards.not_found, name="not-found"),
]
