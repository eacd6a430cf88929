"""The email job: sends a message through the SMTP server in the config."""

from __future__ import annotations

import ssl
from typing import Any

from flask import current_app

from app.jobs.progress import report_progress
from app.jobs.registry import registry


@registry.register()
def send_email(to: str | list[str], subject: str, body: str, html: str | None = None) -> dict[str, Any]:
    """Send an email (plain text, optionally with an HTML part) to one or more addresses."""
    # Imported here: every worker would carry them, and few send mail.
    import smtplib
    from email.message import EmailMessage
    from email.utils import make_msgid, parseaddr

    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        raise ValueError("there must be at least one recipient")
    for address in recipients:
        if "@" not in parseaddr(address)[1]:
            raise ValueError(f"{address!r} is not an email address")
    config = current_app.config
    message = EmailMessage()
    message["From"] = config["MAIL_SENDER"]
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Message-ID"] = make_msgid()
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    report_progress(1, 3, f"connecting to {config['SMTP_HOST']}:{config['SMTP_PORT']}")
    smtp_class = smtplib.SMTP_SSL if config["SMTP_SSL"] else smtplib.SMTP
    with smtp_class(config["SMTP_HOST"], config["SMTP_PORT"], timeout=config["SMTP_TIMEOUT"]) as smtp:
        if config["SMTP_STARTTLS"] and not config["SMTP_SSL"]:
            smtp.starttls(context=ssl.create_default_context())
        if config["SMTP_USERNAME"]:
            smtp.login(config["SMTP_USERNAME"], config["SMTP_PASSWORD"])
        report_progress(2, 3, "sending")
        refused = smtp.send_message(message)
    report_progress(3, 3, "sent")
    return {
        "message_id": message["Message-ID"],
        "sent_to": [address for address in recipients if address not in refused],
        "refused": sorted(refused),
    }
