package balancer

import (
	"math"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"fastlb/upstream"
)

// Hash maps keys (client addresses, header values, cookie values) to
// backends by weighted Maglev consistent hashing (Eisenbud et al., NSDI
// 2016). Update builds a lookup table of prime size from every backend of
// the pool with a weight above 0, in an order fixed by their ids, so two
// fastlb instances with the same backends agree on every key, and removing
// one of N backends moves little more than that backend's keys. A backend
// that is down or in maint keeps its slots: its keys walk on to the next
// slots' backends until it is back, and no other key moves. A lookup is one
// table index; PickKey takes no lock and allocates nothing.
//
// With a balance factor c >= 1 (consistent hashing with bounded loads,
// Mirrokni, Thorup and Zadimoghaddam), a backend that already has more than
// its weighted share of c times the requests in flight passes the key on to
// the next backend of the table.
type Hash struct {
	table  atomic.Pointer[hashTable]
	factor atomic.Uint64 // math.Float64bits of the balance factor; 0 = off
}

type hashTable struct {
	backends []*upstream.Backend // sorted by id
	weights  []int               // the backends' weights when the table was built
	slots    []uint32            // len is a prime; index into backends
	weight   int64               // sum of weights
}

// MinTableSize is the smallest Maglev table, a prime. Tables grow to the
// next prime above 100 times the number of backends, which keeps each
// backend's share within about 1% of its weight.
const MinTableSize = 65537

// NewHash returns a Hash with no backends and bounded loads off.
func NewHash() *Hash {
	h := &Hash{}
	h.table.Store(&hashTable{})
	return h
}

// SetBalanceFactor sets the bounded-load factor c (0 turns it off).
func (h *Hash) SetBalanceFactor(c float64) { h.factor.Store(math.Float64bits(c)) }

// Update rebuilds the table when the weighted backends of s or their
// weights changed. It runs off the request path.
func (h *Hash) Update(s *upstream.Snapshot) {
	var bs []*upstream.Backend
	for _, b := range s.All {
		if b.Weight() > 0 {
			bs = append(bs, b)
		}
	}
	slices.SortFunc(bs, func(a, b *upstream.Backend) int { return strings.Compare(a.ID, b.ID) })
	weights := make([]int, len(bs))
	ids := make([]string, len(bs))
	var total int64
	for i, b := range bs {
		weights[i], ids[i] = b.Weight(), b.ID
		total += int64(weights[i])
	}
	if old := h.table.Load(); slices.Equal(old.backends, bs) && slices.Equal(old.weights, weights) {
		return
	}
	h.table.Store(&hashTable{backends: bs, weights: weights, slots: maglevTable(ids, weights), weight: total})
}

// HashKey hashes a key for PickKey.
func HashKey(key []byte) uint64 { return xxhash.Sum64(key) }

// PickKey returns the backend for a hashed key, skipping backends that are
// down, in maint, in tried, at max_conns or, with bounded loads, over their
// share; primary reports whether it is the key's own backend. A draining
// backend keeps its keys. It returns nil when no backend can take the key.
func (h *Hash) PickKey(key uint64, tried Tried) (b *upstream.Backend, primary bool) {
	t := h.table.Load()
	m := uint64(len(t.slots))
	if m == 0 {
		return nil, false
	}
	start := key % m
	first := t.backends[t.slots[start]]
	factor := math.Float64frombits(h.factor.Load())
	var total int64
	if factor > 0 {
		for _, c := range t.backends {
			total += c.Active()
		}
	}
	ok := func(c *upstream.Backend) bool {
		if !c.StickyOK() || !usable(c, &tried) {
			return false
		}
		if factor == 0 {
			return true
		}
		// HAProxy's rule: a backend may take the request while it has
		// fewer in flight than ceil(c * (total+1)) shared by weight,
		// rounded up.
		slots := int64(math.Ceil(factor * float64(total+1)))
		w := int64(c.Weight())
		return c.Active() < (slots*w+t.weight-1)/t.weight
	}
	if ok(first) {
		return first, true
	}
	// Walk on through the table: successive slots belong to backends in a
	// key-dependent order that every instance shares. The walk is bounded;
	// past it the key's own backend is taken if it can take the request at
	// all, or nothing.
	limit := min(m, uint64(64*len(t.backends)))
	for step := uint64(1); step < limit; step++ {
		if c := t.backends[t.slots[(start+step)%m]]; c != first && ok(c) {
			return c, false
		}
	}
	if first.StickyOK() && usable(first, &tried) {
		return first, true
	}
	return nil, false
}

// maglevTable fills a table of prime size with indexes into ids, each id
// taking slots in proportion to its weight (all weights above 0). Each id
// walks its own permutation of the table, fixed by the id's hash; in each
// round every id earns its weight in credit and claims its next free slot
// for every maximum weight of credit it holds.
func maglevTable(ids []string, weights []int) []uint32 {
	n := len(ids)
	if n == 0 {
		return nil
	}
	m := uint64(tableSize(n))
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	credit := make([]int, n)
	maxW := slices.Max(weights)
	for i, id := range ids {
		h := xxhash.Sum64String(id)
		offset[i] = h % m
		skip[i] = mix64(h)%(m-1) + 1
	}
	const free = math.MaxUint32
	slots := make([]uint32, m)
	for i := range slots {
		slots[i] = free
	}
	for filled := uint64(0); filled < m; {
		for i := 0; i < n && filled < m; i++ {
			credit[i] += weights[i]
			if credit[i] < maxW {
				continue
			}
			credit[i] -= maxW
			for {
				c := (offset[i] + next[i]*skip[i]) % m
				next[i]++
				if slots[c] == free {
					slots[c] = uint32(i)
					filled++
					break
				}
			}
		}
	}
	return slots
}

// tableSize is the smallest prime at least MinTableSize and 100 times n.
func tableSize(n int) int {
	size := max(MinTableSize, 100*n)
	for !isPrime(size) {
		size++
	}
	return size
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// mix64 is the splitmix64 finalizer: a second, independent hash of h.
func mix64(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
