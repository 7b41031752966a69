"""rserpool.testing: every fake provides the real interface and behaves."""

from __future__ import annotations

import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from rserpool import testing
from rserpool.errors import BackendUnavailable
from rserpool.interfaces import (
    ICertificateMapping, IChannelHandler, IChapSecretStore, IGroupSource, IIdentityChecker, IPoolAuthorizer,
    ISrpVerifierStore,
)
from rserpool.security import srp
from rserpool.security.credentials import ChapChecker, SrpChecker
from rserpool.wire import AsapHandleResolution, AsapHandleResolutionResponse


def result(d):
    out = []
    d.addBoth(out.append)
    assert out
    return out[0]


@pytest.mark.parametrize("fake, interface", [
    (testing.AllowAll(), IPoolAuthorizer),
    (testing.ScriptedAuthorizer(), IPoolAuthorizer),
    (testing.MemorySrpStore(), ISrpVerifierStore),
    (testing.MemoryChapStore(), IChapSecretStore),
    (testing.MemoryCertificateMapping(), ICertificateMapping),
    (testing.MemoryGroups(), IGroupSource),
    (testing.MemoryChecker({}), ICredentialsChecker),
    (testing.MemoryChecker({}), IIdentityChecker),
    (testing.RecordingHandler(), IChannelHandler),
])
def test_every_fake_provides_its_interface(fake, interface):
    assert verifyObject(interface, fake)


def test_allow_all_records_and_allows():
    authorizer = testing.AllowAll()
    assert authorizer.authorize("pe1", frozenset(), "register", b"echo") is True
    assert authorizer.calls == [("pe1", "register", b"echo")]


def test_scripted_authorizer_answers_from_its_script():
    outage = BackendUnavailable("down")
    authorizer = testing.ScriptedAuthorizer({("pe1", "register", b"echo"): True,
                                             ("pe2", "register", b"echo"): outage})
    assert authorizer.authorize("pe1", frozenset({"g"}), "register", b"echo") is True
    assert authorizer.authorize("pe1", frozenset(), "deregister", b"echo") is False  # default deny
    assert result(authorizer.authorize("pe2", frozenset(), "register", b"echo")).value is outage
    assert authorizer.calls[0] == ("pe1", frozenset({"g"}), "register", b"echo")
    later = testing.ScriptedAuthorizer({("pe1", "peer", b""): True}, deferred=True)
    d = later.authorize("pe1", frozenset(), "peer", b"")
    assert not d.called
    later.fire_pending()
    assert result(d) is True


def test_memory_stores_answer_and_fail_as_outages():
    srp_store = testing.MemorySrpStore({"pe1": "password"})
    salt, verifier = result(srp_store.srp_verifier("pe1"))
    assert (salt, verifier) == srp_store.entries["pe1"] and len(verifier) == srp.DEFAULT_GROUP.n_len
    assert result(srp_store.srp_verifier("nobody")) is None
    srp_store.fail()
    failure = result(srp_store.srp_verifier("pe1"))
    assert isinstance(failure, Failure) and failure.check(BackendUnavailable)
    assert srp_store.asked == ["pe1", "nobody", "pe1"]
    groups = testing.MemoryGroups({"pe1": ["a", "b"]})
    assert result(groups.groups("pe1")) == frozenset({"a", "b"}) and result(groups.groups("x")) == frozenset()
    chap_store = testing.MemoryChapStore({"pe1": b"s"})
    assert result(chap_store.chap_secret("pe1")) == b"s"


def test_the_stores_plug_into_the_real_checkers():
    srp_checker = SrpChecker(testing.MemorySrpStore({"pe1": "pw"}), b"s" * 16, testing.MemoryGroups({"pe1": ["g"]}))
    challenge = result(srp_checker.challenge("pe1", b"\x01" * 32))
    assert challenge.known
    client = srp.SrpClientRun(srp.DEFAULT_GROUP, "pe1", "pw", b"\x01" * 32)
    a_pub, m1 = client.process_challenge(challenge.salt, challenge.server_public)
    identity = result(srp_checker.check(srp.SrpCredentials(challenge, a_pub, m1)))
    assert (identity.name, identity.groups) == ("pe1", frozenset({"g"}))
    assert isinstance(ChapChecker(testing.MemoryChapStore()), ChapChecker)


def test_certificate_mapping_by_fingerprint(tmp_path):
    from cryptography.hazmat.primitives import hashes

    from rserpool.identity import Identity
    from tests.tlshelpers import make_test_pki

    pki = make_test_pki(tmp_path)
    cert = pki.pe1.issued.certificate
    mapping = testing.MemoryCertificateMapping({cert.fingerprint(hashes.SHA256()).hex(): Identity("billing")})
    assert result(mapping.identity_for(cert)) == Identity("billing")
    assert result(mapping.identity_for(pki.pe2.issued.certificate)) is None


def test_memory_checker():
    checker = testing.MemoryChecker({"site-pe": b"pw"}, mechanism="site", groups={"site-pe": ["g"]})
    identity = result(checker.check(UsernamePassword(b"Site-PE", b"pw")))
    assert (identity.name, identity.mechanism, identity.groups) == ("site-pe", "site", frozenset({"g"}))
    assert result(checker.requestAvatarId(UsernamePassword(b"site-pe", b"pw"))) == "site-pe"
    assert result(checker.requestAvatarId(UsernamePassword(b"site-pe", b"no"))).check(UnauthorizedLogin)
    checker.down = BackendUnavailable("x")
    assert result(checker.check(UsernamePassword(b"site-pe", b"pw"))).check(BackendUnavailable)


def test_connected_channels_carry_messages_both_ways_on_a_clock():
    pair = testing.connected_channels()
    client, server = pair.client.handler, pair.server.handler
    assert client.ready == [pair.client] and server.ready == [pair.server]
    pair.client.send(AsapHandleResolution(b"echo"))
    pair.flush()
    assert server.messages == [AsapHandleResolution(b"echo")]
    pair.server.send(AsapHandleResolutionResponse(b"echo"))
    pair.flush()
    assert client.messages == [AsapHandleResolutionResponse(b"echo")]
    settings = pair.client.settings
    for _ in range(4):  # idle, but the heartbeats cross: both ends stay up past dead_after
        pair.advance(settings.heartbeat_interval)
    assert pair.clock.seconds() > settings.dead_after
    assert not pair.client.transport.disconnecting and not pair.server.transport.disconnecting
    pair.clock.advance(settings.dead_after + settings.heartbeat_interval)  # nothing delivered any more
    assert pair.client.transport.disconnected and pair.server.transport.disconnected


def test_identified_channel_opens_a_gate_admission():
    from tests.test_asap_registrar import make_core

    core = make_core()
    channel = testing.identified_channel(core, "127.0.0.7", "pe1")
    assert (channel.identity, channel.address, channel.admission.principal) == ("pe1", "127.0.0.7", "pe1")
    anonymous = testing.identified_channel(core, "127.0.0.8")
    assert anonymous.identity is None and anonymous.admission.principal == "addr:127.0.0.8"
