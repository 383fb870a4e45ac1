"""Where reports arrive: Maildir, mbox, single messages, .json/.json.gz files and stdin, read with mailbox/email."""

from __future__ import annotations

import gzip
import io
import mailbox
from email.message import EmailMessage
from pathlib import Path

from certbot_dane import reportmail
from certbot_dane.reportmail import Payload

DATA = Path(__file__).parent / "data" / "tlsrpt"
JSON = (DATA / "microsoft.json").read_bytes()
LIMIT = 1 << 20


def message(payload: bytes = JSON, *, kind: str = "application/tlsrpt+gzip", name: str = "r.json.gz",
            subject: str = "Report Domain: example.org Submitter: microsoft.com") -> EmailMessage:
    """A report message as RFC 8460 §5.3 (and tlsrpt-reporter) sends it: multipart/report, the report attached."""
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = subject, "tlsrpt-noreply@microsoft.com", "tlsrpt@example.org"
    msg.set_content("This is an aggregate TLS report from Microsoft Corporation")
    data = gzip.compress(payload) if kind.endswith("gzip") else payload
    maintype, subtype = kind.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    msg.replace_header("Content-Type", msg["Content-Type"].replace("multipart/mixed", "multipart/report"))
    return msg


def found(*paths: Path | str, stdin: io.BytesIO | None = None, limit: int = LIMIT) -> list[Payload]:
    return list(reportmail.read([str(p) for p in paths], limit, stdin))


def test_every_message_of_a_maildir_is_read_and_nothing_is_moved(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir")
    gz, plain = box.add(message()), box.add(message(kind="application/tlsrpt+json", name="r.json"))
    before = sorted(p.name for p in (tmp_path / "Maildir" / "new").iterdir())
    folder = tmp_path / "Maildir"
    got = {p.source: p.data for p in found(folder)}
    assert set(got) == {f"{folder}: message {gz}, attachment r.json.gz",
                        f"{folder}: message {plain}, attachment r.json"}
    assert gzip.decompress(got[f"{folder}: message {gz}, attachment r.json.gz"] or b"") == JSON
    assert got[f"{folder}: message {plain}, attachment r.json"] == JSON
    assert sorted(p.name for p in (tmp_path / "Maildir" / "new").iterdir()) == before


def test_an_mbox_a_message_file_and_report_files_are_read(tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "reports.mbox")
    box.add(message())
    box.add(message(name="second.json.gz"))
    box.flush()
    (tmp_path / "one.eml").write_bytes(bytes(message()))
    (tmp_path / "r.json").write_bytes(JSON)
    (tmp_path / "r.json.gz").write_bytes(gzip.compress(JSON))
    got = found(tmp_path / "reports.mbox", tmp_path / "one.eml", tmp_path / "r.json", tmp_path / "r.json.gz")
    assert [p.problem for p in got] == [None] * 5
    assert [p.source for p in got][-2:] == [str(tmp_path / "r.json"), str(tmp_path / "r.json.gz")]
    assert got[1].source.endswith("message 1, attachment second.json.gz")


def test_a_directory_of_files_is_read_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(JSON)
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(JSON))
    (tmp_path / ".hidden").write_bytes(b"x")
    assert [p.source for p in found(tmp_path)] == [str(tmp_path / "a.json"), str(tmp_path / "b.json.gz")]


def test_one_message_or_report_on_stdin_as_a_mail_pipe_delivers_it() -> None:
    (got,) = found("-", stdin=io.BytesIO(bytes(message())))
    assert (got.source, gzip.decompress(got.data or b"")) == ("stdin, attachment r.json.gz", JSON)
    (raw,) = found("-", stdin=io.BytesIO(gzip.compress(JSON)))
    assert raw == Payload("stdin", gzip.compress(JSON))


def test_a_sender_using_application_gzip_for_a_json_gz_file_is_read() -> None:
    (got,) = reportmail.attachments("m", message(kind="application/gzip", name="google.com!example.org!1!2.json.gz"))
    assert got.data is not None and gzip.decompress(got.data) == JSON


def test_what_is_not_a_report_gets_one_line_each(tmp_path: Path) -> None:
    plain = EmailMessage()
    plain["Subject"] = "Lunch?"
    plain.set_content("see you at noon")
    (tmp_path / "lunch.eml").write_bytes(bytes(plain))
    (tmp_path / "big.json").write_bytes(b"{" + b" " * LIMIT + b"}")
    got = found(tmp_path / "lunch.eml", tmp_path / "big.json", tmp_path / "missing.json",
                "-", stdin=io.BytesIO(b"x" * (LIMIT + 1)))
    assert [(p.source, p.problem) for p in got] == [
        (str(tmp_path / "lunch.eml"),
         "not a TLSRPT report: no application/tlsrpt+gzip or +json part (subject 'Lunch?')"),
        (str(tmp_path / "big.json"), f"over the {LIMIT}-byte limit ({LIMIT + 2} bytes)"),
        (str(tmp_path / "missing.json"), "cannot read: No such file or directory"),
        ("stdin", f"over the {LIMIT}-byte limit"),
    ]


def test_an_oversized_message_in_a_folder_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir")
    box.add(message(b"{" + b" " * LIMIT + b"}", kind="application/tlsrpt+json"))
    box.add(message())
    got = found(tmp_path / "Maildir")
    assert sorted((p.problem or "ok") for p in got) == ["ok", f"over the {LIMIT}-byte limit"]
