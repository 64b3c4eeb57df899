"""Dates and times as the admin shows them (FORMAT_MODULE_PATH): to the second, in TIME_ZONE, so events a few
seconds apart read apart ("2026-11-27 14:04:07", where English's own format reads "Nov. 27, 2026, 2:04 p.m.")."""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
TIME_FORMAT = "H:i:s"
