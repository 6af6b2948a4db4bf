"""URLs of the JSON HTTP API: ``include("progrock.urls")`` under a prefix."""

from __future__ import annotations

from django.urls import path

from progrock.web import views

app_name = "progrock"
urlpatterns = [
    path("tasks/", views.task_list, name="task-list"),
    path("tasks/<str:task_id>/", views.task_detail, name="task-detail"),
    path("tasks/<str:task_id>/cancel/", views.task_cancel, name="task-cancel"),
]
