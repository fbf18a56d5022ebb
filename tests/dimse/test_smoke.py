from dataclasses import replace
from pathlib import Path

from tests.dimse.conftest import Dimse, run_dcmtk
from tests.factories import StudySpec, ct_slice


def test_echo_and_store(dimse: Dimse, tmp_path: Path) -> None:
    echo = run_dcmtk(
        "echoscu", "-aet", "MODALITY", "-aec", dimse.ae_title, "127.0.0.1", str(dimse.port)
    )
    assert echo.returncode == 0, echo.stderr
    folder = tmp_path / "in"
    folder.mkdir()
    spec = StudySpec()
    for number in range(3):
        ct_slice(spec=replace(spec, instance_number=number + 1)).save_as(folder / f"{number}.dcm")
    sent = run_dcmtk(
        "storescu",
        "-aet",
        "MODALITY",
        "-aec",
        dimse.ae_title,
        "+sd",
        "127.0.0.1",
        str(dimse.port),
        str(folder),
    )
    assert sent.returncode == 0, sent.stderr
    with dimse.web.http() as http:
        found = http.get(f"{dimse.web.dicomweb_url}/studies/{spec.study_uid}/instances")
    assert found.status_code == 200
    assert len(found.json()) == 3
