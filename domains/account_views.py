"""Account pages: sign-up, password reset and accepting an invitation.

Thin adapters around domains/accounts.py. Mail (reset links, invitations) goes through
the platform's own sending (sendmsg/platform_mail.py). Sign-ups and reset requests are
limited per client address and hour (domains/ratelimit.py).
"""

from __future__ import annotations

import math

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_http_methods

from domains import accounts
from domains.current import switch_tenant
from domains.forms import JoinForm, SignUpForm
from domains.ratelimit import Allowance, client_address, hit

HOUR = 3600


def _allowance(request: HttpRequest, *, scope: str, limit: int) -> Allowance:
    return hit(scope=scope, client=client_address(request), limit=limit, window=HOUR)


def _too_many(allowance: Allowance) -> str:
    minutes = max(1, math.ceil(allowance.retry_after / 60))
    return f"Too many attempts from your network; try again in {minutes} minutes."


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.SENDMSG_OPEN_SIGNUP:
        return render(request, "registration/signup_closed.html", status=404)
    if request.user.is_authenticated:
        return redirect("dashboard:overview")
    form = SignUpForm(request.POST) if request.method == "POST" else SignUpForm()
    status = 200
    if request.method == "POST":
        allowance = _allowance(request, scope="signup", limit=settings.SENDMSG_SIGNUP_PER_HOUR)
        if not allowance.allowed:
            form.is_valid()
            form.add_error(None, _too_many(allowance))
            response = render(request, "registration/signup.html", {"form": form}, status=429)
            response["Retry-After"] = str(allowance.retry_after)
            return response
        if form.is_valid():
            try:
                new = accounts.sign_up(
                    request=request,
                    email=form.cleaned_data["email"],
                    password=form.cleaned_data["password"],
                    tenant_name=form.cleaned_data["tenant_name"],
                )
            except accounts.AccountError as exc:
                form.add_error(None, str(exc))
            else:
                login(request, new.user, backend="django.contrib.auth.backends.ModelBackend")
                switch_tenant(request, new.tenant.pk)
                messages.success(
                    request,
                    f"Welcome! You own {new.tenant.name}. Add a sending domain to start.",
                )
                return redirect("dashboard:overview")
        status = 400
    return render(request, "registration/signup.html", {"form": form}, status=status)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's, with our templates, a rate limit, and links to SENDMSG_PUBLIC_URL (not to
    whatever Host header the request came with)."""

    template_name = "registration/password_reset_form.html"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("account:password-reset-done")

    def form_valid(self, form):
        allowance = _allowance(
            self.request, scope="password-reset", limit=settings.SENDMSG_PASSWORD_RESET_PER_HOUR
        )
        if not allowance.allowed:
            form.add_error(None, _too_many(allowance))
            response = self.render_to_response(self.get_context_data(form=form), status=429)
            response["Retry-After"] = str(allowance.retry_after)
            return response
        self.extra_email_context = {"base_url": settings.SENDMSG_PUBLIC_URL.rstrip("/")}
        # The form logs (and swallows) a failed send, so the page never tells whether
        # the address has an account; sendmsg/platform_mail.py logs why it failed.
        return super().form_valid(form)


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """Open an invitation link: a signed-in person with its email joins (POST); a new
    person sets a password and joins; someone with an account is asked to log in."""
    try:
        invite = accounts.find_invitation(token)
    except accounts.InvitationNotFound as exc:
        return _invalid(request, str(exc), status=404)
    except accounts.InvitationGone as exc:
        return _invalid(request, str(exc), status=410)
    context: dict = {"invitation": invite, "mode": "join", "form": None}
    user = request.user
    if user.is_authenticated:
        mine = accounts.normalize_email(user.email or user.get_username()) == invite.email
        if not mine:
            context["mode"] = "mismatch"
            return render(request, "dashboard/invitation.html", context, status=403)
        if request.method == "POST":
            return _join(request, invite, user)
        return render(request, "dashboard/invitation.html", context)
    if accounts.account_for(invite.email) is not None:
        context["mode"] = "login"
        context["login_url"] = f"{reverse('login')}?next={request.path}"
        return render(request, "dashboard/invitation.html", context)
    context["mode"] = "new"
    form = JoinForm(request.POST if request.method == "POST" else None, email=invite.email)
    context["form"] = form
    if request.method == "POST":
        if form.is_valid():
            try:
                user = accounts.join_with_new_account(
                    request=request, invitation=invite, password=form.cleaned_data["password"]
                )
            except accounts.InvitationGone as exc:
                return _invalid(request, str(exc), status=410)
            except accounts.AccountError as exc:
                form.add_error(None, str(exc))
            else:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                return _joined(request, invite)
        return render(request, "dashboard/invitation.html", context, status=400)
    return render(request, "dashboard/invitation.html", context)


def _join(request: HttpRequest, invite, user) -> HttpResponse:
    try:
        accounts.accept_invitation(request=request, invitation=invite, user=user)
    except accounts.InvitationGone as exc:
        return _invalid(request, str(exc), status=410)
    except accounts.AccountError as exc:
        messages.error(request, str(exc))
        return redirect("account:invitation", token=request.resolver_match.kwargs["token"])
    return _joined(request, invite)


def _joined(request: HttpRequest, invite) -> HttpResponse:
    switch_tenant(request, invite.tenant_id)
    messages.success(request, f"You joined {invite.tenant.name} as {invite.get_role_display()}.")
    return redirect("dashboard:overview")


def _invalid(request: HttpRequest, reason: str, *, status: int) -> HttpResponse:
    return render(request, "dashboard/invitation_invalid.html", {"reason": reason}, status=status)
