from django.apps import AppConfig


class ReferralsConfig(AppConfig):
    """Tele-consult referrals: the one place a clinic's data crosses to another tenant (a hospital)."""

    name = "referrals"
    default_auto_field = "django.db.models.BigAutoField"
