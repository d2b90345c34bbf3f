package wsify

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/gateway"
)

// metrics are wsify's collectors. Children are resolved once: nothing on
// the message path looks a label up.
type metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	dropped  *prometheus.CounterVec

	results     [5]prometheus.Counter // by verdict
	droppedUTF8 prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_webhook_requests_total",
			Help: "wsify authorizer calls by result: allow (200), deny (other status below 500), error (5xx or transport error), timeout, canceled (the client left first).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gateway_webhook_duration_seconds",
			Help:    "Duration of wsify authorizer calls, whatever their result.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1 ms … 8 s
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "gateway_dropped_messages_total",
			Help:        gateway.DroppedMessagesHelp,
			ConstLabels: prometheus.Labels{"protocol": "wsify"},
		}, []string{"reason"}),
	}
	m.results[allow] = m.requests.WithLabelValues("allow")
	m.results[deny] = m.requests.WithLabelValues("deny")
	m.results[unavailable] = m.requests.WithLabelValues("error")
	m.results[timedOut] = m.requests.WithLabelValues("timeout")
	m.results[canceled] = m.requests.WithLabelValues("canceled")
	m.droppedUTF8 = m.dropped.WithLabelValues("invalid_utf8")
	return m
}

func (m *metrics) verdict(v verdict, d time.Duration) {
	m.results[v].Inc()
	m.duration.Observe(d.Seconds())
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.dropped}
}
