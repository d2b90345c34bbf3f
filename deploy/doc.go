// Package deploy holds the gateway's deployment files (Dockerfile, compose,
// Kubernetes, systemd, Prometheus, Grafana, TLS proxy examples; see
// README.md) and, in validate_test.go, the checks that keep them consistent
// with each other and with the gateway's flags and metrics. It has no code.
package deploy
