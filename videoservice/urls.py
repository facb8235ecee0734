from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from videoservice import views
from videoservice.api import api
from videoservice.auth import ThrottledLoginForm
from videoservice.metrics import metrics_view

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/", api.urls),
    path("accounts/login/", auth_views.LoginView.as_view(authentication_form=ThrottledLoginForm), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
handler404 = "videoservice.views.not_found"
