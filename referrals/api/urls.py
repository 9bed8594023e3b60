from __future__ import annotations

from django.urls import path

from referrals.api import views

urlpatterns = [
    path("hospitals/", views.HospitalListView.as_view(), name="hospital-list"),
    path("hospital-profile/", views.HospitalProfileView.as_view(), name="hospital-profile"),
    path("hospital-profile/turnaround/", views.HospitalTurnaroundView.as_view(), name="hospital-turnaround"),
    path("partnerships/", views.PartnershipListView.as_view(), name="partnership-list"),
    path(
        "partnerships/<uuid:partnership_id>/accept/",
        views.PartnershipAcceptView.as_view(),
        name="partnership-accept",
    ),
    path(
        "partnerships/<uuid:partnership_id>/decline/",
        views.PartnershipDeclineView.as_view(),
        name="partnership-decline",
    ),
    path(
        "partnerships/<uuid:partnership_id>/revoke/",
        views.PartnershipRevokeView.as_view(),
        name="partnership-revoke",
    ),
    path("referrals/", views.ReferralListView.as_view(), name="referral-list"),
    path("referrals/<uuid:referral_id>/", views.ReferralDetailView.as_view(), name="referral-detail"),
    path("referrals/<uuid:referral_id>/accept/", views.ReferralAcceptView.as_view(), name="referral-accept"),
    path(
        "referrals/<uuid:referral_id>/decline/", views.ReferralDeclineView.as_view(), name="referral-decline"
    ),
    path("referrals/<uuid:referral_id>/assign/", views.ReferralAssignView.as_view(), name="referral-assign"),
    path(
        "referrals/<uuid:referral_id>/start-review/",
        views.ReferralStartReviewView.as_view(),
        name="referral-start-review",
    ),
    path("referrals/<uuid:referral_id>/cancel/", views.ReferralCancelView.as_view(), name="referral-cancel"),
    path("referrals/<uuid:referral_id>/close/", views.ReferralCloseView.as_view(), name="referral-close"),
    path("referrals/<uuid:referral_id>/report/", views.ReferralReportView.as_view(), name="referral-report"),
    path(
        "referrals/<uuid:referral_id>/report/sign/",
        views.ReferralReportSignView.as_view(),
        name="referral-report-sign",
    ),
    path(
        "referrals/<uuid:referral_id>/report/addenda/",
        views.ReferralReportAddendumView.as_view(),
        name="referral-report-addendum",
    ),
    path(
        "referrals/<uuid:referral_id>/report/pdf/",
        views.ReferralReportPdfView.as_view(),
        name="referral-report-pdf",
    ),
    path(
        "referrals/<uuid:referral_id>/messages/",
        views.ReferralMessagesView.as_view(),
        name="referral-messages",
    ),
    path(
        "referrals/<uuid:referral_id>/attachments/<uuid:attachment_id>/",
        views.ReferralMessageAttachmentView.as_view(),
        name="referral-message-attachment",
    ),
    path(
        "referrals/<uuid:referral_id>/images/<uuid:image_id>/original/",
        views.ReferralImageOriginalView.as_view(),
        name="referral-image-original",
    ),
    path(
        "referrals/<uuid:referral_id>/images/<uuid:image_id>/preview/",
        views.ReferralImagePreviewView.as_view(),
        name="referral-image-preview",
    ),
]
