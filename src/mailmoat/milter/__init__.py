"""mailmoat's checks as a milter beside an existing MTA (Postfix's smtpd_milters, Sendmail)."""
