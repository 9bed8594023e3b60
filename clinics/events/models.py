"""The clinic's event log (transactional outbox): every change a client may want to hear about, in order."""

from __future__ import annotations

from django.db import models
from django.utils.timezone import now

from clinics.tenancy.models import Clinic


class EventCounter(models.Model):
    """The last sequence number given out per clinic. Its row lock, held until commit, makes sequence
    order equal commit order within a clinic, so a reader never finds a lower number appearing later."""

    clinic = models.OneToOneField(Clinic, primary_key=True, on_delete=models.CASCADE, related_name="+")
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"event counter of {self.clinic_id}: {self.last_seq}"


class Event(models.Model):
    """One change, numbered per clinic from 1 without gaps. Written in the transaction of the change;
    pushed to the clinic's WebSocket group after commit. ``data`` holds ids and states, never secrets:
    a client fetches details through the REST API, which is the truth."""

    id = models.BigAutoField(primary_key=True)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["clinic", "seq"], name="event_seq_unique_per_clinic")]

    def __str__(self) -> str:
        return f"{self.type} #{self.seq} of {self.clinic_id}"

    def message(self) -> dict[str, object]:
        """The JSON a WebSocket client and the REST list receive."""
        return {
            "seq": self.seq,
            "type": self.type,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }
