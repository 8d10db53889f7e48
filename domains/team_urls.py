from django.urls import path

from domains import team_views

app_name = "team"
urlpatterns = [
    path("", team_views.team_list, name="list"),
    path("invite/", team_views.invite, name="invite"),
    path("members/<int:pk>/role/", team_views.member_role, name="member-role"),
    path("members/<int:pk>/remove/", team_views.member_remove, name="member-remove"),
    path("invitations/<int:pk>/revoke/", team_views.invitation_revoke, name="invitation-revoke"),
]
