"""Events of records (see clinics.events): emitted inside the transaction of the change."""

from __future__ import annotations

from clinics.events.services import event_emit
from clinics.records.models import Image, Study


def study_created(study: Study) -> None:
    event_emit(
        clinic_id=study.clinic_id,
        type="study.created",
        data={
            "study_id": str(study.id),
            "patient_id": str(study.patient_id),
            "body_region": study.body_region,
            "status": study.status,
        },
    )


def image_stored(image: Image) -> None:
    event_emit(
        clinic_id=image.clinic_id,
        type="image.stored",
        data={"study_id": str(image.study_id), "image_id": str(image.id), "source": image.source},
    )
