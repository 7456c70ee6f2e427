package upstream

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// latencyBuckets are the upper bounds of the request duration histogram,
// Prometheus's default buckets.
var latencyBuckets = [...]time.Duration{
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
// in Prometheus text format. Removed backends are not written.
func (p *Pool) WriteMetrics(w io.Writer) {
	all := p.Snapshot().All

	for _, b := range all {
		for i := range b.codes {
			if n := b.codes[i].Load(); n > 0 {
				metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_requests_total{backend=%q,code=\"%d\"}", b.ID, i+100), n)
			}
		}
	}
	for _, b := range all {
		var cum uint64
		for i := range b.latency.buckets {
			cum += b.latency.buckets[i].Load()
			le := "+Inf"
			if i < len(latencyBuckets) {
				le = fmt.Sprint(latencyBuckets[i].Seconds())
			}
			metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_request_duration_seconds_bucket{backend=%q,le=%q}", b.ID, le), cum)
		}
		metrics.WriteCounterFloat64(w, fmt.Sprintf("fastlb_request_duration_seconds_sum{backend=%q}", b.ID), time.Duration(b.latency.sumNs.Load()).Seconds())
		metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_request_duration_seconds_count{backend=%q}", b.ID), cum)
	}
	gauge := func(name string, value func(b *Backend) uint64) {
		for _, b := range all {
			metrics.WriteGaugeUint64(w, fmt.Sprintf("%s{backend=%q}", name, b.ID), value(b))
		}
	}
	gauge("fastlb_backend_up", func(b *Backend) uint64 { return boolToUint(b.Healthy()) })
	gauge("fastlb_backend_active_requests", func(b *Backend) uint64 { return uint64(max(b.Active(), 0)) })
	gauge("fastlb_backend_weight", func(b *Backend) uint64 { return uint64(b.Weight()) })
	for _, b := range all {
		metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_backend_failures_total{backend=%q}", b.ID), b.Failures())
	}
	for _, b := range all {
		metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_backend_stale_connections_total{backend=%q}", b.ID), b.StaleConns())
	}
	// Named with a pool, as every per-backend series will be once
	// fastlb has pools beside "default".
	for _, b := range all {
		metrics.WriteGaugeUint64(w, fmt.Sprintf("fastlb_backend_ejected{pool=\"default\",backend=%q}", b.ID), boolToUint(b.out.ejected.Load()))
	}
	for _, b := range all {
		metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_outlier_ejections_total{pool=\"default\",backend=%q,reason=%q}", b.ID, Reason5xx), b.out.byReason[0].Load())
		metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_outlier_ejections_total{pool=\"default\",backend=%q,reason=%q}", b.ID, ReasonGateway), b.out.byReason[1].Load())
	}
	for _, b := range all {
		metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_health_checks_total{backend=%q,result=\"ok\"}", b.ID), b.checksOK.Load())
		metrics.WriteCounterUint64(w, fmt.Sprintf("fastlb_health_checks_total{backend=%q,result=\"fail\"}", b.ID), b.checksFailed.Load())
	}
}

func boolToUint(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}
