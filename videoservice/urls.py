from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from videoservice import describe, views

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("api/models", views.models_list, name="models"),
    path("api/jobs", views.jobs_collection, name="jobs"),
    path("api/jobs/<str:job_id>", views.job_detail, name="job"),
    path("api/jobs/<str:job_id>/cancel", views.job_cancel, name="job-cancel"),
    path("api/jobs/<str:job_id>/video", views.job_video, name="job-video"),
    path("api/describe", describe.describe_view, name="describe"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
handler404 = "videoservice.views.not_found"
