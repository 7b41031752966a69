"""PE checksum (RFC 5353 3.6.2).  RFC 5353 gives no worked example, so the
vectors are computed by hand from its definition (RFC 1071 over the blocks
"pool handle padded to 32 bits, then the 4-byte PE id")."""

from rserpool.wire.checksum import finish, pe_checksum, pe_sum
from rserpool.wire import PeChecksum, decode_message, EnrpPresence, PPID_ENRP


def test_echopool_by_hand():
    # "EchoPool" = 4563 686f 506f 6f6c, PE id 1234 5678:
    # 4563+686f+506f+6f6c+1234+5678 = 0x1d659 -> fold 0xd659+1 = 0xd65a -> ~ = 0x29a5
    assert pe_sum(b"EchoPool", 0x12345678) == 0x1D659
    assert pe_checksum([(b"EchoPool", 0x12345678)]) == 0x29A5


def test_odd_handle_is_zero_padded_and_sum_is_incremental():
    # "abc" -> block 6162 6300 0000 0001: 0x6162 + 0x6300 + 0x0001 = 0xc463
    assert pe_sum(b"abc", 1) == 0xC463
    both = pe_checksum([(b"EchoPool", 0x12345678), (b"abc", 1)])
    # 0x1d659 + 0xc463 = 0x29abc -> 0x9abc + 2 = 0x9abe -> ~ = 0x6541
    assert both == 0x6541
    total = pe_sum(b"EchoPool", 0x12345678) + pe_sum(b"abc", 1) - pe_sum(b"abc", 1)
    assert finish(total) == 0x29A5


def test_empty_set_is_ffff():
    assert pe_checksum([]) == 0xFFFF


def test_pe_checksum_parameter_bytes():
    # Type 0x000f, Length 6 (padding not counted), checksum, 2 padding bytes.
    assert PeChecksum(0x29A5).encode() == bytes.fromhex("000f 0006 29a5 0000")
    msg = EnrpPresence(0x0A0B0C0D, 0, 0x29A5)
    data = bytes.fromhex("01 00 0012 0a0b0c0d 00000000 000f 0006 29a5 0000")
    assert msg.encode() == data
    assert decode_message(data, PPID_ENRP) == msg


def test_pe_sum_matches_the_definition_for_every_handle_length() -> None:
    # The sum of the 16-bit words of the zero-padded block, written out.
    import random

    def by_definition(handle: bytes, pe_id: int) -> int:
        block = handle + bytes(-len(handle) % 4) + (pe_id & 0xFFFFFFFF).to_bytes(4, "big")
        return sum((block[i] << 8) | block[i + 1] for i in range(0, len(block), 2))

    rng = random.Random(5)
    for size in list(range(0, 300)) + [1023, 4096]:
        handle = bytes(rng.getrandbits(8) for _ in range(size))
        for pe_id in (0, 1, 0xFFFFFFFF, rng.getrandbits(32)):
            assert pe_sum(handle, pe_id) == by_definition(handle, pe_id)
    assert pe_sum(bytearray(b"abc"), 1) == 0xC463
