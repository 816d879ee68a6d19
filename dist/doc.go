// Package dist holds what an operator installs Chihaya with, none of it Go: a systemd unit
// (systemd/chihaya.service), a container build (Dockerfile), a Grafana dashboard on the
// /metrics names (grafana/chihaya.json) and example configurations (config/). Its tests keep
// them true: the unit passes systemd-analyze verify, the Dockerfile's build command makes a
// static binary that runs, every metric the dashboard queries is one /metrics exports, and
// every example configuration parses and opens its drivers.
package dist
