from django.apps import AppConfig


class ClinicsConfig(AppConfig):
    name = "clinics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from clinics.tenancy.api import openapi  # noqa: F401  (registers the auth schemes)
