from __future__ import annotations

from django.urls import path

from clinics.tenancy.api import auth, views

urlpatterns = [
    path("auth/register/", auth.RegisterView.as_view(), name="auth-register"),
    path("auth/login/", auth.LoginView.as_view(), name="auth-login"),
    path("auth/refresh/", auth.RefreshView.as_view(), name="auth-refresh"),
    path("auth/logout/", auth.LogoutView.as_view(), name="auth-logout"),
    path("auth/me/", auth.MeView.as_view(), name="auth-me"),
    path("auth/password/", auth.PasswordChangeView.as_view(), name="auth-password"),
    path("clinic/", views.ClinicView.as_view(), name="clinic"),
    path(
        "clinic/transfer-ownership/", views.OwnershipTransferView.as_view(), name="clinic-transfer-ownership"
    ),
    path("members/", views.MemberListView.as_view(), name="member-list"),
    path("members/<uuid:membership_id>/", views.MemberDetailView.as_view(), name="member-detail"),
    path(
        "members/<uuid:membership_id>/deactivate/",
        views.MemberDeactivateView.as_view(),
        name="member-deactivate",
    ),
    path(
        "members/<uuid:membership_id>/activate/", views.MemberActivateView.as_view(), name="member-activate"
    ),
    path("invitations/", views.InvitationListView.as_view(), name="invitation-list"),
    path("invitations/accept/", views.InvitationAcceptView.as_view(), name="invitation-accept"),
    path("invitations/<uuid:invitation_id>/", views.InvitationDetailView.as_view(), name="invitation-detail"),
    path("api-keys/", views.ApiKeyListView.as_view(), name="api-key-list"),
    path("api-keys/<uuid:api_key_id>/", views.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("audit/", views.AuditListView.as_view(), name="audit-list"),
]
