package balancer

import (
	"math"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// rendezvous is weighted rendezvous hashing (HRW, logarithmic method), kept
// here only to measure it beside Maglev: BenchmarkCompareConsistentHashing.
type rendezvous struct {
	hashes  []uint64
	weights []float64
}

func (r *rendezvous) pick(key uint64) int {
	best, bi := -1.0, -1
	for i, nh := range r.hashes {
		u := (float64(mix64(key^nh)>>11) + 0.5) / (1 << 53)
		if s := -r.weights[i] / math.Log(u); s > best {
			best, bi = s, i
		}
	}
	return bi
}

// BenchmarkCompareConsistentHashing measures Maglev (what Hash uses) and
// weighted rendezvous hashing on the same 10,000 keys: spread (max/mean of
// equal backends), weight accuracy, disruption (share of the other
// backends' keys moved when one of five leaves) and lookup cost.
func BenchmarkCompareConsistentHashing(b *testing.B) {
	const n = 5
	keys := make([]uint64, 10000)
	for i := range keys {
		keys[i] = HashKey([]byte("user-" + strconv.Itoa(i)))
	}
	ids := names(n)
	type algo struct {
		name  string
		build func(ids []string, w []int) func(uint64) string
	}
	algos := []algo{
		{"maglev", func(ids []string, w []int) func(uint64) string {
			t := maglevTable(ids, w)
			return func(k uint64) string { return ids[t[k%uint64(len(t))]] }
		}},
		{"rendezvous", func(ids []string, w []int) func(uint64) string {
			r := &rendezvous{}
			for i, id := range ids {
				r.hashes = append(r.hashes, xxhash.Sum64String(id))
				r.weights = append(r.weights, float64(w[i]))
			}
			return func(k uint64) string { return ids[r.pick(k)] }
		}},
	}
	for _, a := range algos {
		b.Run(a.name, func(b *testing.B) {
			pick := a.build(ids, ones(n))
			c := map[string]int{}
			before := make([]string, len(keys))
			for i, k := range keys {
				before[i] = pick(k)
				c[before[i]]++
			}
			maxN := 0
			for _, v := range c {
				maxN = max(maxN, v)
			}
			without := a.build(append(append([]string{}, ids[:2]...), ids[3:]...), ones(n-1))
			moved, others := 0, 0
			for i, k := range keys {
				if before[i] != ids[2] {
					others++
					if without(k) != before[i] {
						moved++
					}
				}
			}
			heavy := a.build(ids, []int{3, 1, 1, 1, 1})
			h := 0
			for _, k := range keys {
				if heavy(k) == ids[0] {
					h++
				}
			}
			i := 0
			for b.Loop() {
				pick(keys[i%len(keys)])
				i++
			}
			// After the loop: b.Loop resets the timer, which drops metrics.
			b.ReportMetric(float64(maxN)/(float64(len(keys))/n), "max/mean")
			b.ReportMetric(100*float64(moved)/float64(others), "%moved")
			b.ReportMetric(float64(h)/float64(len(keys))/(3.0/7), "heavy/ideal")
		})
	}
}
