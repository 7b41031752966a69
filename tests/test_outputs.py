"""rserpool.outputs: the outputs every sans-IO core shares with its shell."""

from __future__ import annotations

import dataclasses

import pytest

from rserpool.asap.pe import KeepAliveDropped
from rserpool.outputs import Close, Ignored, Send
from rserpool.wire import AsapHandleResolution


def test_send_compares_by_channel_and_message_not_by_its_encoding():
    message = AsapHandleResolution(b"echo")
    assert Send("a", message) == Send("a", message, message.encode())
    assert Send("a", message) != Send("b", message)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Send("a", message).channel = "b"  # type: ignore[misc]


def test_ignored_names_a_message_by_its_name_and_anything_else_by_its_text():
    assert Ignored(AsapHandleResolution(b"echo"), "unexpected").what_text == "ASAP_HANDLE_RESOLUTION"
    assert Ignored("selected PE", "not selecting").what_text == "selected PE"


def test_every_core_drops_input_with_the_one_ignored():
    from rserpool.asap import pe, pe_session, pu_session

    assert pe.Ignored is pe_session.Ignored is pu_session.Ignored is Ignored
    assert issubclass(KeepAliveDropped, Ignored)


def test_the_registrar_and_enrp_cores_write_and_close_with_the_one_send_and_close():
    from rserpool.asap import registrar
    from rserpool import enrp

    assert registrar.Send is enrp.Send is Send
    assert registrar.Close is enrp.Close is Close
