"""DICOMweb (PS3.18) for the caller's clinic under ``/dicom-web/``: STOW-RS, QIDO-RS and WADO-RS.

The endpoints follow PS3.18, so they are left out of the OpenAPI document (which describes ``/api/v1``)
and documented here. Authentication and tenancy are the REST API's: ``Authorization: Bearer <jwt>`` or
``Authorization: Api-Key <key>``, the clinic from the credentials (``X-Clinic`` for a person in several),
every UID looked up inside the caller's clinic only; an unknown UID and another clinic's UID are the
same 404. Errors are RFC 9457 problems (``application/problem+json``), as everywhere else.

Store (technician or above)
    ``POST /dicom-web/studies`` and ``POST /dicom-web/studies/{study}`` with
    ``multipart/related; type="application/dicom"; boundary=...``. Parts are streamed to hashed temporary
    files (never held in memory) and each instance is validated and stored on its own, so good instances
    are kept and bad ones reported. The answer is ``application/dicom+json``: ReferencedSOPSequence
    (0008,1199) for stored instances, FailedSOPSequence (0008,1198) with FailureReason (0008,1197),
    ErrorComment (0000,0902, the problem code) and TextValue (0040,A160, the problem text) for refused
    ones, and the study's RetrieveURL (0008,1190). Status 200 when every instance is stored, 202 when some
    failed, 409 when all failed. A part that is not ``application/dicom`` is a 415 problem, a malformed
    body a 400 problem, a part over the upload limit a 413 problem. In the study form an instance of
    another study fails (0xA900). An instance already stored is answered as stored. ``Idempotency-Key``
    works as on every create. Failure reasons: 0xC000 cannot understand (not DICOM, damaged, truncated),
    0x0122 SOP class not supported (no image: SR, DICOMDIR), 0xC122 transfer syntax not supported,
    0xA700 out of resources (over the pixel or frame caps), 0xA900 data set does not match (wrong study),
    0x0110 processing failure (anything else refused).

    Bodies need a ``Content-Length`` under WSGI; behind the ASGI servers (daphne, uvicorn) a chunked body
    works too, because Django spools it to a temporary file before the view runs.

Search (viewer or above)
    ``GET /dicom-web/studies``, ``/studies/{study}/series``, ``/series``, ``/studies/{study}/instances``,
    ``/studies/{study}/series/{series}/instances`` and ``/instances``. Matching keys, by keyword or tag:
    PatientID, PatientName (``*`` and ``?`` wildcards; case-insensitive; a ``family^given`` value
    matches on its given part, the animal's name), StudyInstanceUID (a list split by ``,`` or ``\\``),
    StudyDate (``YYYYMMDD``, ``YYYYMMDD-YYYYMMDD``, open ranges), AccessionNumber, ModalitiesInStudy,
    SeriesInstanceUID, Modality, SOPInstanceUID and SOPClassUID; ``limit`` (default 100, at most 1000),
    ``offset``, ``includefield`` and ``fuzzymatching`` (accepted; the required attributes are always
    returned and matching is never fuzzy). A ``Warning`` header says when more results exist past
    ``limit``, and when a larger ``limit`` was cut down. Other DICOM attributes are ignored with a Warning;
    a name that is no DICOM attribute and a bad value are 400 problems naming the key. Results are read
    from the database (never from files) in a constant number of queries, as ``application/dicom+json``;
    no match is ``200 []``. Only DICOM instances (not photos) and studies with a StudyInstanceUID appear.
    Patient attributes come from the clinic's patient record: PatientName is the animal's name,
    ResponsiblePerson the owner, PatientSpeciesDescription CANINE or FELINE.

Retrieve (viewer or above)
    ``GET /dicom-web/studies/{study}``, ``.../series/{series}``, ``.../series/{series}/instances/{sop}``
    answer ``multipart/related; type="application/dicom"`` streamed from storage, each part as stored
    (its transfer syntax named in the part's Content-Type). Nothing is transcoded: an Accept that names
    only other transfer syntaxes is a 406. ``.../metadata`` at the three levels answers the full headers
    as ``application/dicom+json`` (pixel data left out; AvailableTransferSyntaxUID added).
    ``.../instances/{sop}/rendered`` and ``.../frames/1/rendered`` answer ``image/jpeg`` (default) or
    ``image/png`` by Accept, from the stored preview when it is ready, else rendered on demand (not
    stored); ``quality`` (1-100) sets the JPEG quality.

Not offered: bulk data and frame retrieval (pixel data is in the instances), ``application/dicom+xml``,
STOW of metadata with bulk data, DELETE, and transcoding.
"""
