"""Records: the clinic's patients (studies and images join here with the ingest work)."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Lower
from django.utils.timezone import now

from clinics.tenancy.models import Clinic, User


class Species(models.TextChoices):
    CANINE = "canine", "Dog"
    FELINE = "feline", "Cat"
    OTHER = "other", "Other"


class Sex(models.TextChoices):
    MALE = "male", "Male"
    MALE_NEUTERED = "male_neutered", "Male, neutered"
    FEMALE = "female", "Female"
    FEMALE_SPAYED = "female_spayed", "Female, spayed"
    UNKNOWN = "unknown", "Unknown"


class Patient(models.Model):
    """An animal of the clinic. ``external_id`` links it to the practice-management software."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="patients")
    name = models.CharField(max_length=120)
    species = models.CharField(max_length=16, choices=Species.choices)
    breed = models.CharField(max_length=120, blank=True)
    sex = models.CharField(max_length=16, choices=Sex.choices, default=Sex.UNKNOWN)
    birth_date = models.DateField(null=True, blank=True)
    weight_kg = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True)
    owner_name = models.CharField(max_length=200, blank=True)
    owner_contact = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(species__in=Species.values), name="patient_species_valid"
            ),
            models.CheckConstraint(condition=models.Q(sex__in=Sex.values), name="patient_sex_valid"),
            models.CheckConstraint(
                condition=models.Q(weight_kg__isnull=True) | models.Q(weight_kg__gt=0),
                name="patient_weight_positive",
            ),
            models.UniqueConstraint(
                "clinic",
                Lower("external_id"),
                condition=~models.Q(external_id=""),
                name="patient_external_id_unique_per_clinic",
            ),
        ]
        indexes = [models.Index(fields=["clinic", "-created_at"], name="patient_clinic_created")]

    def __str__(self) -> str:
        return f"{self.name} ({self.species})"
