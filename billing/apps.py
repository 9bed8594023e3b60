from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the usage task with the Celery app a worker sets up (xcaliber.celery discovers
        # only inference's tasks).
        from billing import tasks  # noqa: F401
        from billing.seats import BillingSeatPolicy
        from clinics.tenancy.signals import seat_policy_register

        # Tenancy asks billing before a member is added past the paid seats, and tells it when one goes.
        seat_policy_register("billing", BillingSeatPolicy())
