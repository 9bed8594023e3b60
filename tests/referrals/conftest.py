"""A partner hospital with two specialists, partnered with clinic A, and a referral made through the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from clinics.records.models import Image, Study
from clinics.tenancy.models import Clinic, Membership, Role
from tests.conftest import Cast, bearer_client, make_member
from tests.inference.factories import make_done_read
from tests.records.factories import make_image, make_study
from tests.referrals.factories import make_hospital


@dataclass
class Hospital:
    clinic: Clinic

    def client(self, role: str, index: int = 0) -> APIClient:
        members = Membership.objects.filter(clinic=self.clinic, role=role).order_by("created_at")
        return bearer_client(members[index].user)


@pytest.fixture
def hospital() -> Hospital:
    clinic = make_hospital()
    make_member(clinic, Role.VET)  # a second specialist
    make_member(clinic, Role.TECHNICIAN)
    return Hospital(clinic)


@pytest.fixture
def partnered(cast: Cast, hospital: Hospital) -> Hospital:
    response = cast.client(Role.ADMIN).post("/api/v1/partnerships/", {"hospital_id": str(hospital.clinic.id)})
    assert response.status_code == 201, response.content
    accepted = hospital.client(Role.ADMIN).post(f"/api/v1/partnerships/{response.json()['id']}/accept/")
    assert accepted.status_code == 200, accepted.content
    return hospital


@dataclass
class Shared:
    study: Study
    chosen: Image
    other: Image
    referral: dict[str, Any]


@pytest.fixture
def shared(cast: Cast, partnered: Hospital) -> Shared:
    study = make_study(cast.clinic, body_region="thorax")
    read = make_done_read(cast.clinic, study=study)
    chosen = read.image
    other = make_image(study, seed=5)
    make_done_read(cast.clinic, study=study, version=read.model_version)  # a read of a third image
    response = cast.client(Role.VET).post(
        "/api/v1/referrals/",
        {
            "study_id": str(study.id),
            "hospital_id": str(partnered.clinic.id),
            "urgency": "urgent",
            "question": "Cardiomegaly on the AI read: do you agree?",
            "history": "Coughing for two weeks.",
            "image_ids": [str(chosen.id)],
            "read_id": str(read.id),
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return Shared(study, chosen, other, response.json())
