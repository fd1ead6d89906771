"""A real SMTP server on 127.0.0.1 (aiosmtpd), with STARTTLS, implicit TLS and AUTH as options.

Certificates are made at test time with trustme: a private CA and a server certificate
for "127.0.0.1" and "localhost". The channel under test trusts the CA through its
``ca_file`` setting, exactly as an operator with a private CA would.

    with SmtpServer(tls="starttls", certs=certs, users={"alice": "s3cret"}) as server:
        ... send to server.host:server.port ...
        (mail,) = server.wait_for(1)
        mail.message["Subject"], mail.rcpt_tos, mail.auth_user

    SmtpServer(refuse={"gone@example.com": "550 5.1.1 No such user"})   # RCPT TO answered 550

``closed_port`` gives a port on 127.0.0.1 with nothing listening (a mail server that is down).
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"
Tls = Literal["none", "starttls", "ssl"]


@dataclass(frozen=True, slots=True)
class Certs:
    """A private CA (its PEM at ``ca_file``) and a server context presenting a certificate it signed."""

    ca_file: Path
    server_context: ssl.SSLContext


def make_certs(directory: Path) -> Certs:
    """A fresh CA and server certificate for 127.0.0.1/localhost; the CA's PEM is written to ``directory``."""
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = directory / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certs(ca_file=ca_file, server_context=context)


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One accepted message: the envelope, the parsed message, and who logged in (if anyone)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    auth_user: str | None
    tls: bool


class _Recorder:
    """aiosmtpd handler: parses and keeps every message, and wakes up ``wait_for``."""

    def __init__(self, refuse: Mapping[str, str]) -> None:
        self.cond = threading.Condition()
        self.mails: list[ReceivedMail] = []
        self.refuse = dict(refuse)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's naming)
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        user = session.auth_data.decode() if isinstance(session.auth_data, bytes) else session.auth_data
        # STARTTLS or implicit
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        with self.cond:
            self.mails.append(ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), message, raw,  # type: ignore[arg-type]
                                           user, tls))
            self.cond.notify_all()
        return "250 Message accepted for delivery"


class _Authenticator:
    """Accepts exactly the configured login/password pairs; hands the login on as ``auth_data``."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(login) == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)


class _EphemeralController(Controller):
    """aiosmtpd's Controller bound to port 0: learns the real port before it pokes the server."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpServer:
    """An aiosmtpd server in its own thread on an ephemeral port of 127.0.0.1."""

    def __init__(self, *, tls: Tls = "none", certs: Certs | None = None,
                 users: Mapping[str, str] | None = None, refuse: Mapping[str, str] | None = None,
                 port: int = 0) -> None:
        """``users``: logins AUTH accepts (and then requires); ``refuse``: recipient -> SMTP reply;
        ``port``: a fixed one (a server that "comes back" where a channel expects it), 0 for any free one."""
        if tls != "none" and certs is None:
            raise ValueError("TLS needs certs (make_certs)")
        self.host = HOST
        self._recorder = _Recorder(refuse or {})
        kwargs: dict[str, Any] = {}
        if tls == "starttls":
            assert certs is not None
            kwargs.update(tls_context=certs.server_context, require_starttls=True)
        if tls == "ssl":
            assert certs is not None
            kwargs.update(ssl_context=certs.server_context)
        if users is not None:
            kwargs.update(authenticator=_Authenticator(users), auth_required=True,
                          auth_require_tls=tls != "none")
        self._controller = _EphemeralController(self._recorder, hostname=HOST, port=port,
                                                server_hostname="smtp.test", **kwargs)

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def mails(self) -> list[ReceivedMail]:
        with self._recorder.cond:
            return list(self._recorder.mails)

    def wait_for(self, n: int, timeout: float = 10) -> list[ReceivedMail]:
        """Block until ``n`` messages arrived (the server accepts DATA in its own thread)."""
        with self._recorder.cond:
            if not self._recorder.cond.wait_for(lambda: len(self._recorder.mails) >= n, timeout):
                raise AssertionError(f"expected {n} mails, got {len(self._recorder.mails)}")
            return list(self._recorder.mails)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA and server certificate made once per test session."""
    return make_certs(tmp_path_factory.mktemp("smtp-certs"))


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server (no TLS, no AUTH)."""
    with SmtpServer() as server:
        yield server


@pytest.fixture
def starttls_server(certs: Certs) -> Iterator[SmtpServer]:
    """An SMTP server that requires STARTTLS before MAIL FROM."""
    with SmtpServer(tls="starttls", certs=certs) as server:
        yield server


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening: a mail server that is down."""
    return free_port()
