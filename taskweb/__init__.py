"""taskmaster-web: a web page, a Tessia-style task intake and Prometheus
metrics for taskmasterd, as a separate service that is a D-Bus client of it
(docs/web.md). The daemon itself never speaks HTTP."""
