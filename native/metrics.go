package native

import "github.com/prometheus/client_golang/prometheus"

// Auth failure reasons, the closed set of the reason label.
const (
	reasonMalformed = "malformed"
	reasonVersion   = "version"
	reasonInvalid   = "invalid"
	reasonExpired   = "expired"
	reasonRevoked   = "revoked"
	reasonTimeout   = "timeout"
	// reasonUnavailable: the revoked set is not known yet (fail closed).
	reasonUnavailable = "unavailable"
)

type metrics struct {
	authOK       prometheus.Counter
	authFailures map[string]prometheus.Counter
	refusals     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	ok := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_auth_successes_total", Help: "Successful authentications.",
		ConstLabels: prometheus.Labels{"method": "access_key"},
	})
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_auth_failures_total", Help: "Failed authentications by reason.",
		ConstLabels: prometheus.Labels{"method": "access_key"},
	}, []string{"reason"})
	refusals := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_native_refusals_total", Help: "Error packets sent (refused subscribe, publish or setting).",
	})
	m := &metrics{authOK: ok, authFailures: map[string]prometheus.Counter{}, refusals: refusals}
	for _, r := range []string{reasonMalformed, reasonVersion, reasonInvalid, reasonExpired, reasonRevoked, reasonTimeout, reasonUnavailable} {
		m.authFailures[r] = failures.WithLabelValues(r) // resolved once, zero series exist from the start
	}
	if reg != nil {
		reg.MustRegister(ok, failures, refusals)
	}
	return m
}
