"""URLs of the HTTP API (JSON, long-poll follow, HTML fragments): ``include("progrock.urls")``."""

from __future__ import annotations

from django.urls import path

from progrock.web import follow, fragment, views

app_name = "progrock"
urlpatterns = [
    path("tasks/", views.task_list, name="task-list"),
    path("tasks/<str:task_id>/", views.task_detail, name="task-detail"),
    path("tasks/<str:task_id>/cancel/", views.task_cancel, name="task-cancel"),
    path("tasks/<str:task_id>/fragment/", fragment.task_fragment, name="task-fragment"),
    path("follow/", follow.follow, name="follow"),
]
