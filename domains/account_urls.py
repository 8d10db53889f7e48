from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from domains import account_views

app_name = "account"
urlpatterns = [
    path("signup/", account_views.signup, name="signup"),
    path("password-reset/", account_views.PasswordResetView.as_view(), name="password-reset"),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password-reset-done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            success_url=reverse_lazy("account:password-reset-complete")
        ),
        name="password-reset-confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password-reset-complete",
    ),
    path("invitation/<str:token>/", account_views.invitation, name="invitation"),
]
