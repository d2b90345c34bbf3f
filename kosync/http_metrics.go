package kosync

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// httpMetrics counts the service's HTTP requests (the KOReader sync API,
// /healthcheck and the KOsync /api/* endpoints) by route and status code,
// and times them. The route label is the route's pattern
// ("/syncs/progress/{document...}"), never the request's path: its values
// are the dozen routes of routes(), whatever clients send. Requests no
// route takes (404 from the mux) are not counted here.
type httpMetrics struct {
	requests *prometheus.CounterVec   // route, code
	duration *prometheus.HistogramVec // route
}

func newHTTPMetrics() *httpMetrics {
	return &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_kosync_http_requests_total",
			Help: "KOReader sync and KOsync HTTP requests answered, by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gateway_kosync_http_request_duration_seconds",
			Help: "Time to answer a KOReader sync or KOsync HTTP request (argon2id hashes and the store included), by route pattern.",
			// Prometheus's default buckets (5 ms to 10 s) cover a cache hit,
			// a ~50 ms hash, a wait for a hash worker and a slow store.
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
}

// instrument counts and times h's answers under the route pattern.
func (m *httpMetrics) instrument(pattern string, h http.Handler) http.Handler {
	route := prometheus.Labels{"route": pattern}
	return promhttp.InstrumentHandlerDuration(m.duration.MustCurryWith(route),
		promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(route), h))
}

func (m *httpMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration}
}
