"""`certwright`: a command-line client of Certwright's REST API (/api/v1/)."""
