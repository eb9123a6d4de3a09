"""The recall desk's fast C-FIND answers are byte for byte what pydicom and pynetdicom write."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode

from tapearc.dicomnet import fastfind
from tapearc.dicomnet.fastfind import PreparedIdentifier, encode_elements
from tapearc.dicomnet.qr_scp import answer

ROW: dict[str, Any] = {
    "PatientName": "Müller^Jürgen=ミュラー^ユルゲン", "PatientID": "PAT1",
    "PatientBirthDate": "19610202", "StudyInstanceUID": "1.2.826.0.1.3680043.9.7316.5.12",
    "StudyDate": "20240101", "StudyTime": None, "AccessionNumber": "ACC9",
    "StudyDescription": "CT THORAX", "ModalitiesInStudy": ["CT", "SR"],
    "NumberOfStudyRelatedInstances": 20, "InstanceAvailability": "OFFLINE",
}


def _pydicom_encoding(elements: list[tuple[int, str, str]], implicit: bool) -> bytes:
    ds = Dataset()
    for tag, vr, value in elements:
        ds.add(DataElement(tag, vr, value.split("\\") if "\\" in value else value,
                           validation_mode=config.IGNORE))
    raw = encode(ds, implicit, True)
    assert raw is not None
    return raw


@pytest.mark.parametrize("implicit", [True, False])
def test_identifiers_encode_as_pydicom_does(implicit: bool) -> None:
    ds = answer("STUDY", list(ROW), ROW, "TAPEARC")
    assert isinstance(ds, PreparedIdentifier)
    assert encode_elements(ds.prepared, implicit) == _pydicom_encoding(ds.prepared, implicit)
    # odd lengths of every padding rule, a long-length VR, empty values (UTF-8, as declared)
    odd = [(0x00080005, "CS", "ISO_IR 192"), (0x00080018, "UI", "1.2.3"),
           (0x00100010, "PN", "ABC"), (0x00080020, "DA", ""),
           (0x00081030, "LO", "é"), (0x00204000, "LT", "x"), (0x00400280, "ST", "y"),
           (0x00081190, "UR", "http://a"), (0x00189334, "CS", "Y"), (0x00200013, "IS", "7")]
    assert encode_elements(odd, implicit) == _pydicom_encoding(odd, implicit)


def test_an_answer_with_a_binary_key_is_a_plain_dataset() -> None:
    ds = answer("IMAGE", ["SOPInstanceUID", "Rows"], {"SOPInstanceUID": "1.2.3", "Rows": None},
                "TAPEARC")
    assert not isinstance(ds, PreparedIdentifier)
    assert ds.SOPInstanceUID == "1.2.3" and ds.Rows is None
    assert encode(ds, True, True)


def _message_bytes(primitive: C_FIND, message: Any) -> list[bytes]:
    message.primitive_to_message(primitive)
    return [pdv for pdata in message.encode_msg(1, 16384)
            for _, pdv in pdata.presentation_data_value_list]


@pytest.mark.parametrize("status,identifier,comment", [
    (0xFF00, b"\x10\x00\x10\x00\x04\x00\x00\x00ABCD", None),
    (0x0000, None, None),
    (0xA700, None, "more than 10 matches"),
])
def test_responses_encode_as_pynetdicom_does(status: int, identifier: bytes | None,
                                             comment: str | None) -> None:
    from pynetdicom import dimse

    fastfind.install()
    fast = dimse._RSP_TO_MESSAGE[C_FIND]
    assert fast is not C_FIND_RSP and issubclass(fast, C_FIND_RSP)

    def primitive() -> C_FIND:
        rsp = C_FIND()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
        rsp.Status = status
        rsp.Identifier = BytesIO(identifier) if identifier else None
        if comment:
            rsp.ErrorComment = comment
        return rsp

    assert _message_bytes(primitive(), fast()) == _message_bytes(primitive(), C_FIND_RSP())
