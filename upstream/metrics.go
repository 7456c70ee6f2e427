package upstream

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// latencyBuckets are the upper bounds of the request duration histogram:
// Prometheus's default buckets, and three below them, where the requests
// of a healthy backend on the same network take their time.
var latencyBuckets = [...]time.Duration{
	500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond,
	5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// histogram counts durations into latencyBuckets with atomics only.
type histogram struct {
	buckets [len(latencyBuckets) + 1]atomic.Uint64 // the last is +Inf; not cumulative
	sumNs   atomic.Uint64
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(latencyBuckets) && d > latencyBuckets[i] {
		i++
	}
	h.buckets[i].Add(1)
	if d > 0 {
		h.sumNs.Add(uint64(d))
	}
}

// WriteMetrics writes the per-backend metrics of every backend in the pool
// in Prometheus text format (see the package function WriteMetrics).
func (p *Pool) WriteMetrics(w io.Writer) { WriteMetrics(w, []*Pool{p}) }

// WriteMetrics writes the per-backend metrics of every backend of pools in
// Prometheus text format, each series labelled with its pool and backend,
// one metric after the other. Removed backends are not written.
func WriteMetrics(w io.Writer, pools []*Pool) {
	type member struct {
		pool string
		b    *Backend
	}
	var all []member
	for _, p := range pools {
		for _, b := range p.Snapshot().All {
			all = append(all, member{p.name, b})
		}
	}
	for _, m := range all {
		for i := range m.b.codes {
			if n := m.b.codes[i].Load(); n > 0 {
				metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_requests_total{pool=%q,backend=%q,code=\"%d\"}", m.pool, m.b.ID, i+100), n)
			}
		}
	}
	for _, m := range all {
		labels := fmt.Sprintf("pool=%q,backend=%q", m.pool, m.b.ID)
		var cum uint64
		for i := range m.b.latency.buckets {
			cum += m.b.latency.buckets[i].Load()
			le := "+Inf"
			if i < len(latencyBuckets) {
				le = fmt.Sprint(latencyBuckets[i].Seconds())
			}
			metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_request_duration_seconds_bucket{%s,le=%q}", labels, le), cum)
		}
		metrics.WriteCounterFloat64(w, "fastlb_request_duration_seconds_sum{"+labels+"}", time.Duration(m.b.latency.sumNs.Load()).Seconds())
		metrics.WriteCounterUint64(w, "fastlb_request_duration_seconds_count{"+labels+"}", cum)
	}
	series := func(name string, write func(io.Writer, string, uint64), value func(b *Backend) uint64) {
		for _, m := range all {
			write(w, fmt.Sprintf("%s{pool=%q,backend=%q}", name, m.pool, m.b.ID), value(m.b))
		}
	}
	series("fastlb_backend_up", metrics.WriteGaugeUint64, func(b *Backend) uint64 { return boolToUint(b.Healthy()) })
	series("fastlb_backend_active_requests", metrics.WriteGaugeUint64, func(b *Backend) uint64 { return uint64(max(b.Active(), 0)) })
	series("fastlb_backend_weight", metrics.WriteGaugeUint64, func(b *Backend) uint64 { return uint64(b.Weight()) })
	series("fastlb_backend_failures_total", metrics.WriteCounterUint64, (*Backend).Failures)
	series("fastlb_backend_stale_connections_total", metrics.WriteCounterUint64, (*Backend).StaleConns)
	series("fastlb_backend_ejected", metrics.WriteGaugeUint64, func(b *Backend) uint64 { return boolToUint(b.out.ejected.Load()) })
	for _, m := range all {
		for i, reason := range [...]string{Reason5xx, ReasonGateway} {
			metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_outlier_ejections_total{pool=%q,backend=%q,reason=%q}", m.pool, m.b.ID, reason), m.b.out.byReason[i].Load())
		}
	}
	for _, m := range all {
		metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_health_checks_total{pool=%q,backend=%q,result=\"ok\"}", m.pool, m.b.ID), m.b.checksOK.Load())
		metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_health_checks_total{pool=%q,backend=%q,result=\"fail\"}", m.pool, m.b.ID), m.b.checksFailed.Load())
	}
}

func boolToUint(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

// LatencyBuckets is how many counts Latency reports: one per upper bound
// of LatencyBound, and the last for longer durations.
const LatencyBuckets = len(latencyBuckets) + 1

// LatencyBound is the upper bound of latency bucket i (the last has none:
// it returns 0).
func LatencyBound(i int) time.Duration {
	if i < len(latencyBuckets) {
		return latencyBuckets[i]
	}
	return 0
}

// Latency is how many attempts at b took each bucket's time so far
// (not cumulative), and how many answered with a 5xx status.
func (b *Backend) Latency() (counts [LatencyBuckets]uint64, errors5xx uint64) {
	for i := range b.latency.buckets {
		counts[i] = b.latency.buckets[i].Load()
	}
	for i := 400; i < len(b.codes); i++ { // 500..599
		errors5xx += b.codes[i].Load()
	}
	return counts, errors5xx
}
