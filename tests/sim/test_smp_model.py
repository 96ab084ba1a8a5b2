"""The simulated MCUboot hub's rules that the state machine does not reach: line length at
the boundary, installing a secondary image (overwrite and swap), resuming an upload from a
new client, the recovery entry, and what the slots list."""

from __future__ import annotations

import pytest

from drivers import smp as d
from sim.smp import SLOT0, SLOT_SIZE, McubootHub, Mode, demo_image
from tests.smpkit import ModelLink

OLD, NEW = 0x0101_0000, 0x0105_0000


def client(hub: McubootHub) -> tuple[d.SmpClient, ModelLink]:
    link = ModelLink(hub)
    return d.SmpClient(link, answer_timeout_s=1.0, tries=1), link


def test_a_line_of_128_bytes_is_read_and_one_of_129_dropped() -> None:
    hub = McubootHub()
    c, link = client(hub)
    link.write(b"\x06\x09" + b"A" * 126 + b"\n")  # 129 bytes: dropped
    assert hub.dropped_lines == 1
    link.write(b"\x06\x09" + b"A" * 125 + b"\n")  # 128 bytes: read (and not a frame)
    assert hub.dropped_lines == 1
    assert c.echo("ok") == "ok"


@pytest.mark.parametrize("upgrade", ["overwrite", "swap"])
def test_a_secondary_image_is_installed_at_reset(upgrade: str) -> None:
    hub = McubootHub(upload_to="secondary", upgrade=upgrade, start_in_bootloader=True)
    hub.install(demo_image(OLD, size=8192))
    c, _ = client(hub)
    new = demo_image(NEW, size=8192)
    c.upload(new, chunk=d.chunk_size(1024, len(new), image=2), image=2)
    assert [s.slot for s in c.image_state()] == [0, 1]
    c.reset()
    assert hub.mode is Mode.APP and hub.running_app is not None
    assert hub.running_app.firmware_version == NEW and hub.swaps == 1
    assert hub.flash.read(SLOT0, len(new)) == new
    left = hub.slot_image(1)
    assert (left is not None) == (upgrade == "swap")


def test_an_upload_resumes_from_a_new_client_at_the_servers_offset() -> None:
    hub = McubootHub()
    first, link = client(hub)
    image = demo_image(NEW, size=32 * 1024)
    chunk = d.chunk_size(1024, len(image))
    with pytest.raises(d.ProtocolError):
        first.upload(image, chunk=chunk, max_requests=10)  # interrupted
    held = hub.upload_offset
    assert held == 10 * chunk
    second = d.SmpClient(link, answer_timeout_s=1.0)
    report = second.upload(image, chunk=chunk, start_at=held - chunk)  # a stale guess
    # The hub answered its own offset to the stale chunk without writing it: one request
    # lost, nothing written twice.
    assert report.jumps == []
    assert report.requests == 1 + -(-(len(image) - held) // chunk)
    assert hub.slot_image(0) == image


def test_powerloss_mid_upload_restarts_from_zero() -> None:
    from sim.faults import fault_plan

    hub = McubootHub(faults=fault_plan("powerloss=5", 1, 0))
    c, _ = client(hub)
    image = demo_image(NEW, size=16 * 1024)
    chunk = d.chunk_size(1024, len(image))
    with pytest.raises(d.DeviceTimeout):
        c.upload(image, chunk=chunk)
    assert hub.upload_offset == 0 and hub.resets == 2
    report = c.upload(image, chunk=chunk, start_at=5 * chunk)
    assert report.jumps[0] == (6 * chunk, 0)  # MCUboot lost the upload: start over
    assert hub.slot_image(0) == image


def test_image_state_lists_valid_slots_with_tlv_hash_and_version() -> None:
    hub = McubootHub()
    image = demo_image(0x0102_0304, size=4096)
    hub.install(image)
    c, _ = client(hub)
    [slot] = c.image_state()
    assert (slot.slot, slot.version) == (0, "1.2.3.4")
    assert slot.hash == image[0x200 + 4096 + 8 : 0x200 + 4096 + 8 + 32]
    hub.flash.erase_page(hub.flash.pages_of(SLOT0 + 0x400, 1)[0])  # break the payload
    assert c.image_state() == []


def test_oversized_first_chunk_and_bad_requests() -> None:
    hub = McubootHub()
    c, _ = client(hub)
    with pytest.raises(d.SmpError) as exc:
        c.request(lambda s: d.upload_request(0, b"x", total=SLOT_SIZE + 1, sequence=s), "up")
    assert exc.value.rc == 3
    with pytest.raises(d.SmpError) as exc:
        c.request(lambda s: d.upload_request(0, b"x", sequence=s), "no len")
    assert exc.value.rc == 3
    hdr = d.SmpHeader(0, 1, 0, 1, 1, 9, 6).pack()  # image slot info: not built in
    with pytest.raises(d.SmpError) as exc:
        c.request(lambda s: hdr[:6] + bytes([s]) + hdr[7:] + b"\xa0", "slot info")
    assert exc.value.rc == 8


def test_boot_command_enters_recovery_and_reset_leaves_it() -> None:
    hub = McubootHub(start_in_bootloader=False)
    hub.install(demo_image(OLD, size=4096))
    link = ModelLink(hub)
    assert hub.mode is Mode.APP and b"READY" in link.rx
    link.write(b"BOOT\r\n")
    assert hub.mode is Mode.RECOVERY
    d.SmpClient(link, answer_timeout_s=1.0).reset()
    assert hub.mode is Mode.APP


def test_a_profile_buffer_larger_than_the_hubs_is_named_in_the_hint() -> None:
    hub = McubootHub(receive_size=512)
    c, _ = client(hub)
    assert c.echo("x") == "x"
    image = demo_image(NEW, size=4096)
    with pytest.raises(d.DeviceTimeout) as exc:
        c.upload(image, chunk=d.chunk_size(1024, len(image)))
    assert "receive_size (1024)" in (exc.value.hint or "")
    assert hub.dropped_frames == 1  # dropped unanswered, as MCUboot does
    report = c.upload(image, chunk=d.chunk_size(512, len(image)))
    assert report.size == len(image) and hub.slot_image(0) == image
