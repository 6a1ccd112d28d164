"""[tls], [websocket] and the tls/ws/wss listen addresses: checks and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipsilo.config import ConfigError, ListenAddress, load_config
from tests.integration.secure_clients import make_certs


def error_of(*sets: str, data_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(None, list(sets), env={}, data_dir=data_dir)
    line = str(info.value)
    assert "\n" not in line
    return line


def test_defaults_and_listen_protocols(tmp_path: Path) -> None:
    make_certs(tmp_path)
    c = load_config(None, ['server.listen=["tls:127.0.0.1:5061", "ws:[::1]:8080", '
                           '"wss:0.0.0.0:8443", "udp:127.0.0.1:5060"]'],
                    env={}, data_dir=tmp_path)
    assert [a.proto for a in c.server.listen] == ["tls", "ws", "wss", "udp"]
    assert c.server.listen[1] == ListenAddress("ws", "::1", 8080)
    assert (c.tls.certificate, c.tls.private_key, c.tls.ca_list) == ("cert.pem", "key.pem", "")
    assert (c.tls.verify_client, c.tls.min_version) == ("none", "TLSv1.2")
    assert c.websocket.allowed_origins == []
    settings = c.tls.settings(c.data_dir)
    assert settings.certificate == tmp_path / "cert.pem" and settings.ca_list is None
    # the default listen list is unchanged and needs no certificate
    assert [str(a) for a in load_config(None, [], env={}).server.listen] == [
        "udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]


def test_tls_listener_needs_a_readable_certificate_and_key(tmp_path: Path) -> None:
    line = error_of("server.listen=tls:127.0.0.1:5061", data_dir=tmp_path)
    assert line.startswith("config error: tls.certificate: cannot read ")
    assert str(tmp_path / "cert.pem") in line
    make_certs(tmp_path)
    (tmp_path / "key.pem").unlink()
    line = error_of("server.listen=wss:127.0.0.1:8443", data_dir=tmp_path)
    assert line.startswith("config error: tls.private_key: cannot read ")
    other = make_certs(tmp_path / "other")
    line = error_of("server.listen=wss:127.0.0.1:8443", f"tls.private_key={other.key}",
                    data_dir=tmp_path)
    assert line.startswith("config error: tls.certificate: cannot use ")
    line = error_of("server.listen=tls:127.0.0.1:5061", f"tls.private_key={other.key}",
                    "tls.certificate=cert.pem", "tls.verify_client=required",
                    f"tls.ca_list={tmp_path / 'nope.pem'}", data_dir=tmp_path)
    assert line.startswith("config error: tls.certificate: cannot use")


def test_ws_listener_needs_no_certificate(tmp_path: Path) -> None:
    c = load_config(None, ["server.listen=ws:127.0.0.1:8080"], env={}, data_dir=tmp_path)
    assert c.server.listen[0].proto == "ws"


@pytest.mark.parametrize(("sets", "expected"), [
    (["tls.verify_client=sometimes"], "config error: tls.verify_client: Input should be"),
    (["tls.min_version=SSLv3"], "config error: tls.min_version: Input should be"),
    (["tls.ciphers=ALL"], "config error: unknown key tls.ciphers"),
    (["websocket.allowed_origins=['']"], "config error: websocket.allowed_origins[0]: not an"),
    (['server.listen=["wss:127.0.0.1"]'], "config error: server.listen[0]: bad listen address"),
    (['server.listen=["quic:127.0.0.1:5060"]'],
     "config error: server.listen[0]: bad listen address \"quic:127.0.0.1:5060\" "
     "(protocol must be udp, tcp, tls, ws or wss)"),
])
def test_errors_name_the_key(sets: list[str], expected: str) -> None:
    assert error_of(*sets).startswith(expected)


@pytest.mark.parametrize("proto", ["tcp", "tls", "ws", "wss"])
def test_several_workers_serve_every_transport(proto: str, tmp_path: Path) -> None:
    make_certs(tmp_path)
    c = load_config(None, ["server.workers=2", f'server.listen=["udp:127.0.0.1:5060", '
                           f'"{proto}:127.0.0.1:5061"]'], data_dir=tmp_path, env={})
    assert c.server.workers == 2
    assert [a.proto for a in c.server.listen] == ["udp", proto]


def test_origins_are_normalised_and_round_trip(tmp_path: Path) -> None:
    c = load_config(None, ["websocket.allowed_origins=https://App.Example.com/"], env={})
    assert c.websocket.allowed_origins == ["https://app.example.com"]
    path = tmp_path / "dump.toml"
    path.write_text(c.dump_toml())
    again = load_config(path, [], env={})
    assert again.websocket == c.websocket and again.tls == c.tls


def test_a_ca_list_that_does_not_load_is_an_error_even_without_tls_listeners(
        tmp_path: Path) -> None:
    line = error_of(f"tls.ca_list={tmp_path / 'missing.pem'}", data_dir=tmp_path)
    assert line.startswith("config error: tls.ca_list: cannot read ")
    (tmp_path / "junk.pem").write_text("junk")
    line = error_of("tls.ca_list=junk.pem", data_dir=tmp_path)
    assert line.startswith("config error: tls.ca_list: no usable CA certificate in ")
