"""Template tags for the account pages."""

from django import template
from django.conf import settings

register = template.Library()


@register.simple_tag
def signup_open() -> bool:
    """Whether anyone may sign up (SENDMSG_OPEN_SIGNUP), read when the page is drawn."""
    return settings.SENDMSG_OPEN_SIGNUP
